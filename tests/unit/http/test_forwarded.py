"""Trust decisions and X-Forwarded-* reading, as plain data."""

from __future__ import annotations

import pytest

from unbroken.http.forwarded import (
    NOT_FORWARDED,
    Forwarded,
    parse_trusted_proxies,
    read_forwarded,
    split_host,
)

DEFAULT = parse_trusted_proxies("127.0.0.1,::1")


@pytest.mark.parametrize(("allow", "peer", "trusted"), [
    ("127.0.0.1,::1", ("127.0.0.1", 5000), True),
    ("127.0.0.1,::1", ("::1", 5000, 0, 0), True),
    ("127.0.0.1,::1", ("10.0.0.1", 5000), False),
    ("10.0.0.0/8", ("10.1.2.3", 5000), True),
    ("10.0.0.0/8", ("::ffff:10.1.2.3", 5000, 0, 0), True),
    ("10.0.0.0/8", ("11.0.0.1", 5000), False),
    ("fe80::/10", ("fe80::1%eth0", 5000, 0, 2), True),
    ("*", ("198.51.100.1", 5000), True),
    ("", ("127.0.0.1", 5000), False),
    ("10.0.0.0/8", "/run/app.sock", True),  # a unix socket peer
    ("10.0.0.0/8", "", True),
])
def test_trust(allow: str, peer: object, trusted: bool) -> None:
    assert parse_trusted_proxies(allow).trusts(peer) is trusted


@pytest.mark.parametrize("text", ["10.0.0.0/33", "localhost", "1.2.3.4/8/8"])
def test_bad_entries_are_named(text: str) -> None:
    with pytest.raises(ValueError, match="is not an IP address or network"):
        parse_trusted_proxies(f"127.0.0.1, {text}")


def test_read_forwarded_takes_the_first_element_of_the_first_line() -> None:
    headers = [(b"X-Forwarded-For", b" 203.0.113.7 , 10.0.0.1"),
               (b"x-forwarded-for", b"198.51.100.1"),
               (b"X-Forwarded-Proto", b"HTTPS"),
               (b"X-Forwarded-Host", b"example.com:8443, inner")]
    assert read_forwarded(headers) == Forwarded("203.0.113.7", "https", "example.com:8443")


def test_nothing_forwarded() -> None:
    assert read_forwarded([(b"host", b"x")]) is NOT_FORWARDED


@pytest.mark.parametrize(("name", "value"), [
    (b"x-forwarded-for", b"not-an-ip"),
    (b"x-forwarded-for", b""),
    (b"x-forwarded-proto", b"gopher"),
    (b"x-forwarded-host", b"bad host"),
    (b"x-forwarded-host", b"caf\xe9"),
])
def test_unusable_values_are_ignored(name: bytes, value: bytes) -> None:
    assert read_forwarded([(name, value)]) == Forwarded()


@pytest.mark.parametrize(("host", "scheme", "expected"), [
    ("example.com", "https", ("example.com", "443")),
    ("example.com:8080", "https", ("example.com", "8080")),
    ("[::1]", "http", ("[::1]", "80")),
    ("[::1]:81", "http", ("[::1]", "81")),
])
def test_split_host(host: str, scheme: str, expected: tuple[str, str]) -> None:
    assert split_host(host, scheme) == expected

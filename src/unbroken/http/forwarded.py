"""Which peers may speak for their clients, and what their X-Forwarded-* headers say.

Rules:
1. No I/O: the connection core asks `TrustedProxies.trusts(peer)` once per connection
   and `read_forwarded(headers)` once per request from a trusted peer; the engines
   only copy the answer into the environ or scope.
2. A peer outside the list changes nothing: its X-Forwarded-* headers still reach the
   app as ordinary headers, but never REMOTE_ADDR, the scheme or the host.
3. A unix-socket peer (no address) is trusted: only local processes can connect to it.
4. Values we cannot use are ignored, never half-applied: a client that is not an IP
   address, a scheme other than http/https, a host with spaces or controls.

With a trusted proxy, the client is the *first* address of X-Forwarded-For (as
gunicorn reads it); proxies that append (nginx's $proxy_add_x_forwarded_for) keep it
there only when nothing in front of them adds its own, so chain proxies with care.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": "80", "https": "443"}


# Peer hosts whose trust each TrustedProxies remembers (asked once per connection).
_TRUST_CACHE_LIMIT = 4096


@dataclass(frozen=True)
class TrustedProxies:
    """The parsed `--forwarded-allow-ips`: networks, or everyone (`*`)."""

    networks: tuple[IPNetwork, ...] = ()
    everyone: bool = False
    # What `trusts` answered, per peer host (a cache, not part of the value).
    _answers: dict[Any, bool] = field(default_factory=dict, compare=False, repr=False)

    def trusts(self, peername: Any) -> bool:
        """`peername` as asyncio reports it: a (host, port, ...) tuple for TCP."""
        if not isinstance(peername, tuple):
            return True  # a unix socket (rule 3)
        if self.everyone:
            return True
        # Asked once per connection, mostly about the same few proxies: remember the
        # answer per host string (bounded, so many distinct clients cannot grow it).
        host = peername[0]
        known = self._answers.get(host)
        if known is None:
            known = self._judge(peername)
            if len(self._answers) >= _TRUST_CACHE_LIMIT:
                self._answers.clear()
            self._answers[host] = known
        return known

    def _judge(self, peername: tuple[Any, ...]) -> bool:
        try:
            address = ipaddress.ip_address(str(peername[0]).partition("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket sees ::ffff:a.b.c.d
        return any(address in network for network in self.networks)


def parse_trusted_proxies(text: str) -> TrustedProxies:
    """`127.0.0.1,::1,10.0.0.0/8` or `*`; raises ValueError naming a bad entry."""
    entries = [entry.strip() for entry in text.split(",") if entry.strip()]
    if "*" in entries:
        return TrustedProxies(everyone=True)
    networks: list[IPNetwork] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network") from None
    return TrustedProxies(tuple(networks))


@dataclass(frozen=True)
class Forwarded:
    """What a trusted proxy says about the client; None where it says nothing usable."""

    client: str | None = None
    scheme: str | None = None
    host: str | None = None


NOT_FORWARDED = Forwarded()


def read_forwarded(headers: Iterable[tuple[bytes, bytes]]) -> Forwarded:
    """X-Forwarded-For / -Proto / -Host from a request head's (name, value) pairs."""
    values: dict[bytes, bytes] = {}
    for name, value in headers:
        lowered = name.lower()
        if lowered in FORWARDED_FIELDS and lowered not in values:
            values[lowered] = value  # the first field line holds the first element
    if not values:
        return NOT_FORWARDED
    return Forwarded(
        client=_client(values.get(b"x-forwarded-for")),
        scheme=_scheme(values.get(b"x-forwarded-proto")),
        host=_host(values.get(b"x-forwarded-host")),
    )


FORWARDED_FIELDS = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})


def _first(value: bytes | None) -> str:
    if value is None:
        return ""
    return value.split(b",", 1)[0].strip().decode("latin-1")


def _client(value: bytes | None) -> str | None:
    text = _first(value)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _scheme(value: bytes | None) -> str | None:
    text = _first(value).lower()
    return text if text in SCHEMES else None


def _host(value: bytes | None) -> str | None:
    text = _first(value)
    if not text or any(not 0x21 <= ord(char) <= 0x7E for char in text):
        return None
    return text


def split_host(host: str, scheme: str) -> tuple[str, str]:
    """`example.com:8443` → (`example.com`, `8443`); `[::1]` → (`[::1]`, default port)."""
    has_port = host.rfind(":") > host.rfind("]")
    name, _, port = host.rpartition(":") if has_port else (host, "", "")
    return name or "localhost", port or DEFAULT_PORTS.get(scheme, "80")

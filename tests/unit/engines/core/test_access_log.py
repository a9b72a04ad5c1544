"""Access log formatters: pure functions of one AccessRecord."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from unbroken.engines.core.access_log import (
    FORMATS,
    AccessLog,
    AccessRecord,
    format_combined,
    format_json,
    rejection_record,
)
from unbroken.http.errors import HTTPError

WHEN = 1_700_000_000.25  # 2023-11-14T22:13:20.250Z

SERVED = AccessRecord(
    when=WHEN, remote="10.0.0.7", method=b"GET", target=b"/a?b=1", version="1.1",
    status=200, size=512, duration=0.0123456, referer=b"https://ref.example/",
    user_agent=b"curl/8", request_id=None,
)


def _stamp(when: float) -> str:
    return time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(when))


def test_combined_line() -> None:
    assert format_combined(SERVED) == (
        f'10.0.0.7 - - {_stamp(WHEN)} "GET /a?b=1 HTTP/1.1" 200 512 '
        '"https://ref.example/" "curl/8"'
    )


def test_combined_unknowns_and_escaping() -> None:
    record = replace(SERVED, remote=None, status=None, size=0, referer=None,
                     user_agent=b'evil"\n1.2.3.4 - - fake')
    line = format_combined(record)
    assert line.startswith(f'- - - {_stamp(WHEN)} "GET /a?b=1 HTTP/1.1" - - "-" ')
    assert "\n" not in line and line.endswith(r'\n1.2.3.4 - - fake"')


def test_combined_rejection() -> None:
    error = HTTPError("bad request line")
    record = rejection_record(("10.0.0.8", 5000), error, WHEN)
    assert format_combined(record) == f'10.0.0.8 - - {_stamp(WHEN)} "-" 400 - "-" "-"'


def test_json_line() -> None:
    fields = json.loads(format_json(SERVED))
    assert fields == {
        "time": "2023-11-14T22:13:20.250Z", "remote": "10.0.0.7", "method": "GET",
        "path": "/a?b=1", "version": "1.1", "status": 200, "bytes": 512,
        "duration_ms": 12.346, "referer": "https://ref.example/", "user_agent": "curl/8",
    }


def test_json_request_id_only_when_given_and_no_line_forging() -> None:
    record = replace(SERVED, request_id=b"abc-123", user_agent=b'x"\n{"status":1}')
    line = format_json(record)
    assert "\n" not in line
    fields = json.loads(line)
    assert fields["request_id"] == "abc-123"
    assert fields["user_agent"] == 'x"\n{"status":1}'


def test_json_rejection() -> None:
    error = HTTPError("header too long")
    error.status = 431
    fields = json.loads(format_json(rejection_record(None, error, WHEN)))
    assert fields == {
        "time": "2023-11-14T22:13:20.250Z", "remote": None, "method": None, "path": None,
        "version": None, "status": 431, "bytes": 0, "duration_ms": None, "referer": None,
        "user_agent": None,
    }


def test_format_chosen_at_construction(tmp_path: Path) -> None:
    assert set(FORMATS) == {"combined", "json"}
    target = tmp_path / "access.log"
    log = AccessLog(str(target), "json")
    try:
        log.log_rejection(("10.0.0.9", 1), HTTPError("nope"))
    finally:
        log.close()
    assert json.loads(target.read_text())["status"] == 400


def test_combined_quoting_cannot_close_the_field_early() -> None:
    from unbroken.engines.core.access_log import _quote

    assert _quote(b'evil" 200 "x') == 'evil\\" 200 \\"x'
    assert _quote(b"back\\slash") == "back\\\\slash"
    assert _quote(b"two\nlines") == "two\\nlines"

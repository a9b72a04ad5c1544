"""Django under unbroken: each log record is printed once.

Django configures logging as it is imported (its LOGGING, and DEFAULT_LOGGING's console
handler on `django` under DEBUG); those loggers propagate, so the worker's root handler
used to print every record a second time."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from processes import stop_process

from unbroken.control.client import ControlUnavailable, call

APPS = Path(__file__).resolve().parents[1] / "apps"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_django_log_records_are_printed_once(tmp_path: Path) -> None:
    pytest.importorskip("django")
    port, control, log_path = free_port(), str(tmp_path / "ctl.sock"), tmp_path / "out.log"
    with open(log_path, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "unbroken", "serve", "django_logging:application",
             "--chdir", str(APPS), "-b", f"127.0.0.1:{port}", "-w", "1", "--control",
             control, "--health-path", "/healthz"],
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                if call(control, "status", timeout=5).data["phase"] == "serving":
                    break
            except (ControlUnavailable, OSError):
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        for _ in range(3):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as answer:
                assert answer.read() == b"hello\n"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/missing", timeout=10)
        assert missing.value.code == 404
        missing.value.close()
        time.sleep(0.3)  # the worker's stderr reaches the file
    finally:
        stop_process(process, timeout=40)
    text = log_path.read_text()
    assert text.count("djapp served /") == 3, text
    assert text.count("Not Found: /missing") == 1, text
    assert "worker" in text  # and unbroken's own lines still print

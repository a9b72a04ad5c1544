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


def serve(tmp_path: Path, app: str, *args: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    port, log_path = free_port(), tmp_path / "out.log"
    with open(log_path, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "unbroken", "serve", app, "--chdir", str(APPS),
             "-b", f"127.0.0.1:{port}", "-w", "1", "--control", str(tmp_path / "ctl.sock"),
             *args], stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    return process, port, log_path


def wait_serving(process: subprocess.Popen[bytes], control: str, log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, log_path.read_text()
        try:
            if call(control, "status", timeout=5).data["phase"] == "serving":
                return
        except (ControlUnavailable, OSError):
            pass
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.05)


def test_django_log_records_are_printed_once(tmp_path: Path) -> None:
    pytest.importorskip("django")
    process, port, log_path = serve(tmp_path, "django_logging:application",
                                    "--health-path", "/healthz")
    try:
        wait_serving(process, str(tmp_path / "ctl.sock"), log_path)
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


def test_a_broken_urlconf_is_caught_at_boot_only_with_a_health_path(tmp_path: Path) -> None:
    """docs/django.md: Django imports ROOT_URLCONF on the first request, so without
    --health-path the project boots "ready" and answers 500; with it, boot fails."""
    pytest.importorskip("django")
    process, port, log_path = serve(tmp_path, "django_broken_urls:application")
    try:
        wait_serving(process, str(tmp_path / "ctl.sock"), log_path)
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
        assert failed.value.code == 500
        failed.value.close()
    finally:
        stop_process(process, timeout=40)

    process, port, log_path = serve(tmp_path, "django_broken_urls:application",
                                    "--health-path", "/healthz", "--boot-timeout", "20")
    try:
        assert process.wait(timeout=60) != 0, log_path.read_text()
    finally:
        stop_process(process, timeout=40)
    assert "django_broken_urls_missing" in log_path.read_text()

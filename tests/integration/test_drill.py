"""`unbroken drill` end to end: a clean run passes, a dying server fails it, the
report renders in a real browser (headless Chromium)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

DRILL = [sys.executable, "-m", "unbroken", "drill"]


def test_drill_on_the_example_app_passes(tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    done = subprocess.run([*DRILL, "--duration", "3", "--reloads", "1", "--broken",
                           "--clients", "2", "--report", str(report)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"overall: \d+ requests, 0 failed", done.stdout), done.stdout
    assert "reload broken (import fails): refused" in done.stdout
    assert "PASS" in done.stdout and f"report: {report}" in done.stdout
    _check_in_chromium(report, tmp_path)


HELLO = """\
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello\\n"]
"""


def test_drill_on_the_user_s_app_reports_the_generation_that_answered(tmp_path: Path) -> None:
    """An app that does not say which release answered: the drill neither calls it the
    bundled example nor labels its reloads as the example's, and counts answers by worker
    generation from the master."""
    (tmp_path / "hello.py").write_text(HELLO)
    report = tmp_path / "report.html"
    done = subprocess.run([*DRILL, "hello:app", "--duration", "3", "--reloads", "2",
                           "--clients", "2", "--report", str(report)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=90)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "bundled" not in output and "import)" not in output
    assert re.search(r"^drill: serving hello:app on 127\.0\.0\.1:\d+ with 2 workers$",
                     done.stderr, re.MULTILINE), output
    for number in (1, 2):
        assert re.search(rf"^reload #{number}: served in [\d.]+s \(as expected\): ",
                         done.stdout, re.MULTILINE), output
    line = next(x for x in done.stdout.splitlines() if x.startswith("answered by version"))
    counted = re.fullmatch(
        r"answered by version \(the app does not say; the master's request counters by "
        r"worker generation\): generation 1 (\d+), generation 2 (\d+), generation 3 (\d+)"
        r"(; (\d+) not counted yet when their worker exited)?", line)
    assert counted, line
    overall = re.search(r"overall: (\d+) requests, 0 failed", done.stdout)
    assert overall, output
    total, by_generation = int(overall[1]), [int(counted[i]) for i in (1, 2, 3)]
    assert all(by_generation), line  # each generation answered some
    if counted[5]:  # answers the counters missed are said, never silently dropped
        assert sum(by_generation) + int(counted[5]) == total
    else:  # the workers may also have served what was in flight when the load stopped
        assert total <= sum(by_generation) <= total + 4, (total, line)
    assert "hello:app" in report.read_text() and "generation 3" in report.read_text()


def test_drill_fails_when_the_server_dies(service_factory: Any, tmp_path: Path) -> None:
    service = service_factory()
    service.wait_serving()
    report = tmp_path / "report.html"
    drill = subprocess.Popen(
        [*DRILL, "--control", service.control, "--target", f"127.0.0.1:{service.port}",
         "--duration", "3", "--reloads", "1", "--clients", "2", "--timeout", "1",
         "--report", str(report)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Kill the whole service once load is flowing: master and workers, no drain.
    killer = threading.Timer(1.0, lambda: os.killpg(service.process.pid, signal.SIGKILL))
    killer.start()
    try:
        output, _ = drill.communicate(timeout=40)
    finally:
        killer.cancel()
        if drill.poll() is None:
            drill.kill()
            drill.wait(10)
    assert drill.returncode == 1, output
    assert "FAIL" in output and re.search(r"overall: \d+ requests, [1-9]\d* failed", output)
    assert report.exists()


def _check_in_chromium(report: Path, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing on CI: scripts/install-test-deps installs it")
        pytest.skip("chromium is not installed (scripts/install-test-deps installs it)")
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={tmp_path / 'chromium'}", "--dump-dom",
         report.as_uri()], capture_output=True, text=True, timeout=60).stdout
    for chart in ("chart-requests", "chart-errors", "chart-latency", "chart-versions"):
        assert f'<svg id="{chart}"' in dom, dom[:2000]
    assert 'class="reload-window"' in dom and "<polyline" in dom
    assert 'id="verdict" class="PASS"' in dom

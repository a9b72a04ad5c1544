"""A request still running at --graceful-timeout is cut, and never silently (issue 12):
the worker logs it, the master counts it, the reload's history entry notes it."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from haproxy import free_port
from loadcheck import metric
from release import point_current, write_release
from waiting import wait_until

from unbroken.control.client import call


def _slow_request(address: tuple[str, int], answer: dict[str, Any]) -> None:
    """GET /slow?s=5 on a raw socket: what came back before the connection ended."""
    try:
        with socket.create_connection(address, timeout=10) as client:
            client.sendall(b"GET /slow?s=5 HTTP/1.1\r\nHost: t\r\n\r\n")
            received = b""
            while chunk := client.recv(65536):
                received += chunk
            answer["bytes"] = received
    except OSError as error:
        answer["error"] = error




def test_request_cut_at_the_graceful_deadline_is_logged_counted_and_in_history(
        service_factory: Any, releases: Path) -> None:
    port = free_port()
    service = service_factory("--threads", "4", "--graceful-timeout", "1",
                              "--reload-stable-for", "0", "--metrics-bind", f"127.0.0.1:{port}")
    service.wait_serving()
    answer: dict[str, Any] = {}
    client = threading.Thread(target=_slow_request, args=(service.address, answer))
    client.start()
    wait_until(lambda: any(w["in_flight"] for w in service.status()["workers"]))
    write_release(releases, "v2")
    point_current(releases, "v2")

    reloaded = service.reload_cli()
    client.join(10)

    assert reloaded.returncode == 0, reloaded.stderr  # the new code serves
    assert "generation 2 serving" in reloaded.stdout
    assert not client.is_alive()
    assert answer.get("bytes", b"") == b""  # cut: an empty reply (or a reset), as before
    # The entry is written when generation 2 serves; the old workers report later.
    entry = wait_until(lambda: next(
        (r for r in call(service.control, "history", timeout=5).data["reloads"]
         if r["outcome"] == "ok" and r["draining"] == 0), None))
    assert (entry["generation_before"], entry["generation_after"], entry["cut"]) == (1, 2, 1)
    assert metric(port, "unbroken_requests_cut_total") == 1
    table = subprocess.run([sys.executable, "-m", "unbroken", "history", "--control",
                            service.control], capture_output=True, text=True, timeout=30)
    assert "CUT" in table.stdout and re.search(r" ok +1 +2 +1 ", table.stdout), table.stdout
    cut_lines = re.findall(r"worker \d+ \(id \d+, generation 1\) cut GET /slow after "
                           r"(\d+\.\d)s at --graceful-timeout", service.output())
    assert len(cut_lines) == 1, service.output()
    assert 1.0 <= float(cut_lines[0]) < 5.0  # past the deadline, before the app would end

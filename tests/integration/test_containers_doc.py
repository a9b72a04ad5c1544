"""docs/containers.md's container command, run exactly as written: as PID 1 in a PID
namespace, in a network namespace of its own (so its 0.0.0.0:8000 is that namespace's,
and the only traffic is on that namespace's loopback), from the bundled example app."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from waiting import wait_until

DOC = Path(__file__).resolve().parents[2] / "docs" / "containers.md"
EXAMPLE = Path(__file__).resolve().parents[2] / "src" / "unbroken" / "example"


def _cmd() -> list[str]:
    match = re.search(r"^CMD (\[.*\])$", DOC.read_text(), re.MULTILINE)
    assert match, "docs/containers.md has a CMD line"
    argv: list[str] = json.loads(match.group(1))
    return argv


@pytest.mark.skipif(os.geteuid() != 0 or not all(map(shutil.which, ("unshare", "nsenter", "ip"))),
                    reason="namespaces need root, unshare, nsenter and ip")
def test_the_documented_container_command_serves_is_ready_and_stops_on_sigterm(
        tmp_path: Path) -> None:
    shutil.copy(EXAMPLE / "app.py", tmp_path / "app.py")  # WORKDIR holds the app
    inner = "ip link set lo up && exec " + " ".join(_cmd())
    outer = subprocess.Popen(["unshare", "--pid", "--net", "--fork", "--kill-child",
                              "sh", "-c", inner], cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)

    def inside(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", f"--net=/proc/{master}/ns/net", *argv],
                              capture_output=True, text=True, timeout=10)

    try:
        master = wait_until(lambda: next((int(p) for p in os.listdir("/proc") if p.isdigit()
                                          and _parent(int(p)) == outer.pid), None))
        # 503 "not ready: starting" while the first generation boots, then 200.
        wait_until(lambda: inside("curl", "-s", "http://127.0.0.1:8081/").stdout == "ready\n",
                   message="readiness 200")
        answer = inside("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                        "http://127.0.0.1:8000/")
        assert answer.stdout == "200"
        os.kill(master, 15)  # STOPSIGNAL SIGTERM, as the container runtime sends it
        wait_until(lambda: "503" in inside("curl", "-s", "-o", "/dev/null", "-w",
                                           "%{http_code}", "http://127.0.0.1:8081/").stdout,
                   timeout=4, message="not ready once the stop began")
        started = time.monotonic()
        outer.wait(timeout=20)
        assert time.monotonic() - started >= 3  # --drain-delay 5: it kept serving a while
    finally:
        if outer.poll() is None:
            os.killpg(outer.pid, 9)
            outer.wait(timeout=10)


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[1])

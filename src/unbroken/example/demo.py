"""Serve the bundled example under load, reload it (a broken release included), count failures.

Run with `python -m unbroken.example.demo`. It writes releases v1..v3 of the
example app into a temporary directory with a `current` symlink, the way rsync or
git-pull deploys do, serves `current` with unbroken, and while keep-alive and
connection-per-request clients hammer it:
  1. deploys v2 (1 s import) and reloads;
  2. deploys a broken v3 and reloads: the reload must be refused, v2 keeps serving;
  3. deploys a fixed v3 and reloads.
It exits 0 only if every request succeeded and each reload ended as it should.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from unbroken.control.client import ControlUnavailable, call
from unbroken.loadgen import Load, Sample, summarize

SOURCE = Path(__file__).with_name("app.py")


def write_release(root: Path, release: str, boot: float = 0.0, broken: bool = False) -> None:
    directory = root / "releases" / release
    directory.mkdir(parents=True, exist_ok=True)
    text = SOURCE.read_text()
    text = text.replace('RELEASE = "v1"', f"RELEASE = {release!r}")
    text = text.replace("BOOT_SECONDS = 0.0", f"BOOT_SECONDS = {boot!r}")
    text = text.replace("BROKEN = False", f"BROKEN = {broken!r}")
    (directory / "app.py").write_text(text)
    link = root / ".current.tmp"
    link.unlink(missing_ok=True)
    link.symlink_to(Path("releases") / release)
    os.replace(link, root / "current")


def wait_serving(control: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if call(control, "status", timeout=5).data["phase"] == "serving":
                return
        except (ControlUnavailable, OSError):
            pass
        time.sleep(0.05)
    raise SystemExit("demo: unbroken did not start serving")


def reload(control: str, label: str, expect_ok: bool) -> bool:
    started = time.monotonic()
    reply = call(control, "reload")
    verdict = "ok" if reply.ok else "refused"
    print(f"  {label}: reload {verdict} in {time.monotonic() - started:.2f}s: {reply.message}")
    if not reply.ok and reply.details:
        print("    " + reply.details.strip().splitlines()[-1])
    return reply.ok == expect_ok


def report(samples: list[Sample]) -> int:
    summary = summarize(samples)
    releases: dict[str, int] = {}
    for sample in samples:
        if sample.error is None:
            key = sample.body.split(b'"release": "')[-1].split(b'"')[0].decode()
            releases[key] = releases.get(key, 0) + 1
    print(f"requests: {summary.requests}, failed: {summary.failures} {summary.by_kind or ''}")
    print(f"latency: p50 {summary.p50 * 1000:.1f} ms, p99 {summary.p99 * 1000:.1f} ms, "
          f"max {summary.max * 1000:.1f} ms")
    print("answered by release: " + ", ".join(f"{k} {v}" for k, v in sorted(releases.items())))
    return summary.failures


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="unbroken-demo-") as temp:
        root = Path(temp)
        write_release(root, "v1")
        listener = socket.create_server(("127.0.0.1", 0), backlog=2048)
        port = listener.getsockname()[1]
        control = str(root / "control.sock")
        command = [sys.executable, "-m", "unbroken", "serve", "app:app", "--chdir",
                   str(root / "current"), "-b", f"fd://{listener.fileno()}", "-w", "2",
                   "--health-path", "/healthz", "--control", control, "--log-level", "warning"]
        print(f"demo: serving the example app on 127.0.0.1:{port} with 2 workers")
        server = subprocess.Popen(command, pass_fds=(listener.fileno(),))
        try:
            wait_serving(control, server)
            loads = [Load(("127.0.0.1", port), clients=4, keep_alive=keep, duration=120,
                          max_requests=500_000).start() for keep in (True, False)]
            time.sleep(1)
            write_release(root, "v2", boot=1.0)
            good = reload(control, "v2 (1 s import)", expect_ok=True)
            time.sleep(1)
            write_release(root, "v3", broken=True)
            good &= reload(control, "v3 (broken import)", expect_ok=False)
            time.sleep(1)
            write_release(root, "v3")
            good &= reload(control, "v3 (fixed)", expect_ok=True)
            time.sleep(1)
            samples = sorted(loads[0].stop() + loads[1].stop(), key=lambda s: s.start)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
            listener.close()
        failures = report(samples)
    ok = good and failures == 0 and samples[-1].body.count(b'"v3"') == 1
    print("demo: PASS, zero failed requests" if ok else "demo: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

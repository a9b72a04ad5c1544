"""Stopping what a test started, by PID, with bounded waits."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_process(process: subprocess.Popen[bytes], signum: int = signal.SIGTERM,
                 timeout: float = 20.0) -> None:
    """Ask with `signum`; after `timeout`, SIGKILL the whole process group."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signum)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

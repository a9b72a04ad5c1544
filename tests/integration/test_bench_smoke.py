"""The throughput bench still runs end to end: servers start, wrk drives them, the table
is written, so a change to the engine or to the bench cannot break it unnoticed.

`--smoke` needs no peers' venv (it takes gunicorn and uvicorn from this Python if they
are there) and measures only the hello case for a second per server.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SPEED = REPO / "bench" / "speed.py"
SMOKE_TIMEOUT = 60.0  # about 8 s when all is well; the bound only stops a hang

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")


def unbroken_rows(markdown: str) -> list[list[str]]:
    """The per-case table rows of unbroken, split into cells."""
    rows = []
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 12 and cells[0] in ("WSGI", "ASGI") and cells[1] == "unbroken":
            rows.append(cells)
    return rows


def test_smoke_run_writes_a_table_with_unbroken_serving(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SPEED), "--smoke", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=SMOKE_TIMEOUT, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    [table] = tmp_path.glob("speed-*-smoke.md")
    rows = unbroken_rows(table.read_text())
    assert rows, table.read_text()
    for interface, _, rps, *_, cpu, errors, _, _, note in rows:
        assert rps != "—", (interface, note)  # not measured: the note says why
        assert float(rps) > 0, (interface, note)
        assert float(cpu) > 0, (interface, note)  # the workers' CPU was read from /proc
        assert errors == "0", (interface, errors, note)
    # The smoke servers include unbroken-asgi and uvicorn: items 1 and 2 judge that pair.
    wanted = ("| 1 CPU per request | hello: unbroken-asgi ≤ uvicorn",
              "| 2 throughput | hello: unbroken-asgi ≥ uvicorn")
    goal_lines = [line for line in table.read_text().splitlines() if line.startswith(wanted)]
    assert len(goal_lines) == 2, table.read_text()
    assert all(line.endswith(("**met** |", "**not met** |")) for line in goal_lines), goal_lines

"""What a deploy tells people and machines while it runs.

Every step on every host is an event (`step` start and end, with seconds and outcome);
`--json` prints each as one JSON object per line on stdout for CI, a terminal gets a
live table (rich) of each host's step, and anything else gets plain lines on stderr.
The last thing printed is the summary: per host, release, step times, requests served
during the switch, and the error.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any


@dataclass
class HostRow:
    name: str
    step: str = "waiting"
    outcome: str = ""
    release: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    requests: int | None = None
    error: str = ""


class Reporter:
    """Collects the per-host rows; the subclasses decide how each event is shown."""

    def __init__(self) -> None:
        self.rows: dict[str, HostRow] = {}
        self.deploy_id = ""
        self.started = time.monotonic()

    def row(self, host: str) -> HostRow:
        return self.rows.setdefault(host, HostRow(host))

    def event(self, kind: str, **data: Any) -> None:
        host = data.get("host")
        if kind == "step" and host:
            row = self.row(host)
            row.step = data["step"]
            if data["phase"] == "end":
                row.outcome = data["outcome"]
                row.seconds[data["step"]] = data["seconds"]
                if data["outcome"] != "ok":
                    row.error = data.get("error", "")
        self.show(kind, data)

    def show(self, kind: str, data: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class JSONReporter(Reporter):
    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__()
        self.stream = stream or sys.stdout

    def show(self, kind: str, data: dict[str, Any]) -> None:
        self.stream.write(json.dumps({"event": kind, "deploy_id": self.deploy_id,
                                      "t": round(time.monotonic() - self.started, 3),
                                      **data}) + "\n")
        self.stream.flush()


class PlainReporter(Reporter):
    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__()
        self.stream = stream or sys.stderr

    def show(self, kind: str, data: dict[str, Any]) -> None:
        line = describe(kind, data)
        if line:
            self.stream.write(line + "\n")
            self.stream.flush()


class LiveReporter(Reporter):
    """A table redrawn in place: one line per host, its step, and how it went."""

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True)
        self.live = Live(console=self.console, refresh_per_second=8, transient=True)
        self.live.start()

    def show(self, kind: str, data: dict[str, Any]) -> None:
        from rich.table import Table

        if kind in ("note", "rolled back", "summary"):
            line = describe(kind, data)
            if line:
                self.console.print(line, markup=False, highlight=False)
        table = Table(box=None, show_header=True, header_style="bold")
        for column in ("host", "step", "outcome", "error"):
            table.add_column(column)
        for row in self.rows.values():
            table.add_row(row.name, row.step, row.outcome or "…", row.error[:80])
        self.live.update(table)

    def close(self) -> None:
        self.live.stop()


def describe(kind: str, data: dict[str, Any]) -> str:
    if kind == "step":
        if data["phase"] == "start":
            return ""
        tail = f": {data['error']}" if data.get("error") else ""
        return (f"unbroken deploy: {data['host']}: {data['step']} {data['outcome']} "
                f"({data['seconds']:.2f}s){tail}")
    if kind in ("note", "rolled back"):
        return f"unbroken deploy: {data['message']}"
    if kind == "summary":
        verdict = "ok" if data["exit_code"] == 0 else f"FAILED (exit {data['exit_code']})"
        stranded = f"; NOT rolled back: {', '.join(data['stranded'])}" \
            if data["stranded"] else ""
        tail = f": {data['message']}" if data["message"] else ""
        details = f"\n{data['details'].rstrip()}" if data.get("details") else ""
        return f"{data['table']}\nunbroken deploy: {verdict}{tail}{stranded} " \
            f"({data['seconds']:.1f}s){details}"
    return ""


def summary_table(rows: list[HostRow]) -> str:
    steps = ["prepare", "check", "switch", "rollback"]
    header = f"{'HOST':<16} {'RELEASE':<26} " + " ".join(f"{s.upper():>8}" for s in steps) \
        + f" {'REQUESTS':>8}  RESULT"
    lines = [header]
    for row in rows:
        times = " ".join(f"{row.seconds[s]:>7.2f}s" if s in row.seconds else f"{'-':>8}"
                         for s in steps)
        requests = "-" if row.requests is None else str(row.requests)
        result = row.error or "ok"
        lines.append(f"{row.name:<16} {row.release or '-':<26} {times} {requests:>8}  "
                     f"{result}")
    return "\n".join(lines)


def reporter_for(json_output: bool) -> Reporter:
    if json_output:
        return JSONReporter()
    if sys.stderr.isatty():
        return LiveReporter()
    return PlainReporter()

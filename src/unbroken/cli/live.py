"""Live terminal views with rich: `status --watch` and `reload`'s progress line.

Polling is bounded by the user (Ctrl-C) and by each call's timeout; nothing here
changes the service.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from unbroken.control.client import call
from unbroken.control.protocol import Reply

WATCH_INTERVAL = 0.25  # ~4 polls a second: smooth enough, and a status reply is tiny


def status_view(data: dict[str, Any]) -> Group:
    """One screen: the master's line, a reload's progress while it rolls, every worker."""
    header = Text(f"{data['name']}: master {data['master_pid']}, {data['phase']}, generation "
                  f"{data['generation']}, {data['desired']} worker(s) wanted, on "
                  f"{', '.join(data['binds'])}", style="bold")
    parts: list[Any] = [header]
    target = data.get("target")
    if data["phase"] == "reloading" and target is not None:
        ready = sum(1 for w in data["workers"]
                    if w["generation"] == target and w["state"] == "ready")
        parts.append(Text(f"reloading to generation {target}: {ready}/{data['desired']} ready",
                          style="yellow"))
    table = Table(box=None, header_style="bold")
    for column in ("PID", "GEN", "STATE", "AGE", "REQUESTS", "IN-FLIGHT", "RSS-MiB"):
        table.add_column(column, justify="left" if column == "STATE" else "right")
    styles = {"booting": "yellow", "ready": "green", "parked": "cyan", "draining": "magenta"}
    for w in data["workers"]:
        table.add_row(str(w["pid"]), str(w["generation"]),
                      Text(w["state"], style=styles.get(w["state"], "")), f"{w['age']:.1f}s",
                      str(w["requests"]), str(w["in_flight"]), f"{w['rss_kib'] / 1024:.1f}")
    parts.append(table)
    return Group(*parts)


def watch_status(control: str) -> None:
    """Redraw the status ~4 times a second until Ctrl-C."""
    with Live(status_view(call(control, "status", timeout=5).data), auto_refresh=False) as live:
        while True:
            time.sleep(WATCH_INTERVAL)
            live.update(status_view(call(control, "status", timeout=5).data), refresh=True)


def live_progress(console: Console) -> tuple[Live, Callable[[Reply], None]]:
    """A one-line live view that each progress reply rewrites; use `with live:`."""
    live = Live(Text("unbroken: reload requested"), console=console, auto_refresh=False,
                transient=True)

    def on_progress(reply: Reply) -> None:
        live.update(Text(f"unbroken: {reply.message}"), refresh=True)

    return live, on_progress

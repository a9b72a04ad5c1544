"""`unbroken drill`: its flags, and its printout; the work is in `unbroken.drill`.

`unbroken.drill` (its load generator, analysis and report, with http.client and the
email parser under them) is imported only when a drill runs: every command's parser
is built from this module, and `unbroken reload`, started beside the workers it
reloads, would otherwise spend some 50 ms of CPU importing what it never uses.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from unbroken.cli.parser import Parser
from unbroken.sockets import AddressError, TCPAddress, parse_address

if TYPE_CHECKING:
    from unbroken.drill.run import DrillOptions


def add_parser(commands: argparse._SubParsersAction[Parser]) -> None:
    parser = commands.add_parser(
        "drill", help="serve an app under load, reload it, report every failed request",
        description="Without APP, drills the bundled example app. Exits non-zero if any "
        "request failed or a reload did not end as expected.")
    parser.add_argument("app", nargs="?", help="APP to serve (default: the bundled example)")
    parser.add_argument("--control", metavar="PATH",
                        help="attach to the running service on this control socket")
    parser.add_argument("--target", metavar="HOST:PORT",
                        help="where to send load when attached (loopback only)")
    parser.add_argument("--clients", type=int, default=4,
                        help="clients of each kind, keep-alive and connection-per-request")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of load")
    parser.add_argument("--reloads", type=int, default=2, help="reloads to perform")
    parser.add_argument("--broken", action="store_true",
                        help="also reload into a broken release, which must be refused")
    parser.add_argument("-w", "--workers", type=int, default=2, help="workers (not attached)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    parser.add_argument("--report", metavar="PATH",
                        help="HTML report (default: ./unbroken-drill-<timestamp>.html)")


def _target(text: str | None) -> tuple[str, int] | None:
    if text is None:
        return None
    address = parse_address(text)
    if not isinstance(address, TCPAddress):
        raise AddressError(f"--target {text!r}: expected HOST:PORT")
    return (address.host, address.port)


def options_from(arguments: argparse.Namespace) -> DrillOptions:
    from unbroken.drill.run import DrillError, DrillOptions

    if arguments.clients < 1 or arguments.duration <= 0 or arguments.reloads < 0 \
            or arguments.workers < 1 or arguments.timeout <= 0:
        raise DrillError("--clients, --duration, --workers, --timeout must be > 0, "
                         "--reloads >= 0")
    return DrillOptions(
        app=arguments.app, control=arguments.control, target=_target(arguments.target),
        clients=arguments.clients, duration=arguments.duration, reloads=arguments.reloads,
        broken=arguments.broken, workers=arguments.workers, timeout=arguments.timeout)


def drill(arguments: argparse.Namespace) -> int:
    """Run, print, write the report; 0 only if the drill passed."""
    from unbroken.drill.analysis import text_report
    from unbroken.drill.html import render
    from unbroken.drill.run import DrillError, describe_target, report_path, run_drill

    options = options_from(arguments)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        result = run_drill(options, say)
    except ValueError as error:  # loadgen refuses a non-loopback target
        raise DrillError(str(error)) from None

    for line in text_report(result):
        print(line)
    path = report_path(arguments.report)
    Path(path).write_text(render(result, describe_target(options)))
    print(f"report: {path}")
    return 0 if result.passed else 1

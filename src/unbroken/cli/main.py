"""The command line: the only place that parses argv and turns errors into exit codes.

Every `serve` flag is generated from the setting declarations in
`config/settings.py`; nothing here names a setting by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from unbroken import __version__
from unbroken.cli.deploy import add_parser as add_deploy_parser
from unbroken.cli.deploy import run as deploy
from unbroken.cli.drill import add_parser as add_drill_parser
from unbroken.cli.drill import drill
from unbroken.cli.parser import Parser, parse
from unbroken.config import Config
from unbroken.config.hooks import Hooks
from unbroken.config.parse import SWITCH_VALUES, explain
from unbroken.config.settings import declarations
from unbroken.config.source import ConfigSource
from unbroken.control.client import NoService, call
from unbroken.control.paths import (
    control_path_problem,
    default_control_path,
    find_control_path,
    no_service,
)
from unbroken.control.protocol import Reply
from unbroken.errors import EXIT_FAILED, UnbrokenError, UsageError
from unbroken.sockets import AddressError, parse_address

EXIT_OK = 0


def _checked(name: str, parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            message = explain(error)
            if message.startswith("is not"):  # a bad number: say which
                message = f"{text!r} {message}"
            raise argparse.ArgumentTypeError(message) from None

    convert.__name__ = name  # argparse names the type in its message
    return convert


class NotASwitchValue(str):
    """A word after a switch that is not on/off: the APP, which argparse gave the switch."""


def _switch_or_word(text: str) -> bool | NotASwitchValue:
    return SWITCH_VALUES[text.lower()] if text.lower() in SWITCH_VALUES \
        else NotASwitchValue(text)


def _add_settings(parser: argparse.ArgumentParser) -> None:
    for field, declaration in declarations():
        if field.name == "app":
            parser.add_argument("app", nargs="?", help=declaration.help)
            continue
        switch = isinstance(field.default, bool)
        parser.add_argument(
            *declaration.flags, dest=field.name, default=None,
            action="append" if declaration.repeatable else "store",
            # A switch (bool setting) given bare means on: `--proxy-protocol`; a word
            # after it that is not on/off is the APP (see `_give_back_the_app`).
            nargs="?" if switch else None, const=True if switch else None,
            type=_switch_or_word if switch else _checked(field.name, declaration.parse),
            metavar="on|off" if switch else declaration.metavar,
            help=f"{declaration.help} (default: {field.default})",
        )


def _give_back_the_app(parser: argparse.ArgumentParser, arguments: argparse.Namespace) -> None:
    """`--proxy-protocol app:app`: argparse hands `app:app` to the switch; it is the APP."""
    for field, declaration in declarations():
        value = getattr(arguments, field.name, None)
        if not isinstance(value, NotASwitchValue):
            continue
        if arguments.app is None:
            arguments.app = str(value)
            setattr(arguments, field.name, True)
        else:
            parser.error(f"argument {'/'.join(declaration.flags)}: {str(value)!r} must be "
                         "on or off")


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--control", metavar="PATH", help="control socket of the service")
    parser.add_argument("-n", "--name", default="unbroken",
                        help="service name, for the default control path")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="unbroken",
        description="A Python application server whose reloads never break a request.")
    parser.add_argument("--version", action="version", version=f"unbroken {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="serve an app and reload it safely")
    check = commands.add_parser(
        "check", help="validate the configuration and import the app in a throwaway process")
    for command in (serve, check):
        _add_settings(command)
        files = command.add_mutually_exclusive_group()
        files.add_argument("-c", "--config", metavar="FILE",
                           help="settings file (default: ./unbroken.toml, else "
                           "[tool.unbroken] in ./pyproject.toml); a *.py file is read as "
                           "gunicorn's, a *.ini as uWSGI's (docs/migrating.md); read again "
                           "at every reload")
        files.add_argument("--ini", metavar="FILE",
                           help="a uWSGI ini file ([uwsgi] section), as -c FILE.ini")
    reload = commands.add_parser("reload", help="roll in the code on disk; wait for the verdict")
    status = commands.add_parser("status", help="show the generation and every worker")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument("--watch", action="store_true",
                        help="live view, redrawn ~4 times a second until Ctrl-C")
    history = commands.add_parser("history", help="past reloads: when, how long, outcome")
    history.add_argument("--json", action="store_true", help="print JSON")
    stop = commands.add_parser("stop", help="drain and stop the service")
    stop.add_argument("--quick", action="store_true", help="do not wait for in-flight requests")
    scale = commands.add_parser("scale", help="set the number of workers")
    scale.add_argument("workers", type=int)
    for sub in (reload, status, stop, scale, history):
        _add_target(sub)
    add_drill_parser(commands)
    add_deploy_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = parse(parser, argv)
    if arguments.command in ("serve", "check"):
        _give_back_the_app(parser, arguments)
    try:
        code = COMMANDS[arguments.command](arguments)
        sys.stdout.flush()  # here, where a closed pipe (`| head`) is caught below
        return code
    except NoService as error:
        # A wrong --name: say what is running, and where we looked.
        named = getattr(arguments, "control", None) is None and hasattr(arguments, "name")
        print(f"unbroken: {no_service(error.path) if named else error}", file=sys.stderr)
        return error.exit_code
    except UnbrokenError as error:  # anything else is a bug, and keeps its traceback
        print(f"unbroken: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `unbroken status | head`: the reader has what it wanted. Point stdout at
        # /dev/null so the interpreter's last flush does not complain, and exit quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_OK


def _config_source(arguments: argparse.Namespace) -> ConfigSource:
    values = {field.name: getattr(arguments, field.name) for field, _ in declarations()}
    if values["bind"] is not None:
        values["bind"] = tuple(values["bind"])
    return ConfigSource.locate(values, arguments.config, arguments.ini)


def _serve_config(arguments: argparse.Namespace) -> tuple[Config, ConfigSource, Hooks]:
    source = _config_source(arguments)
    loaded = source.load_all(notes=True)
    config = loaded.config
    for address in config.bind:
        parse_address(address)
    problem = control_path_problem(config.control or default_control_path(config.name),
                                   named=config.control is None)
    if problem is not None:
        raise AddressError(problem)
    for note in loaded.notes:  # once, at start: a reload reads the file without them
        print(f"unbroken: note: {note}", file=sys.stderr)
    return config, source, loaded.hooks


def serve(arguments: argparse.Namespace) -> int:
    # Imported here: the client commands should not pay for the master's imports.
    from unbroken.logs import configure_logging
    from unbroken.master.arbiter import Master, StartupFailed

    config, source, hooks = _serve_config(arguments)
    configure_logging(config.log_level)
    try:
        return Master(config, source, hooks).run()
    except StartupFailed as failure:
        print(f"unbroken: startup failed: {failure}", file=sys.stderr)
        return EXIT_FAILED


def check(arguments: argparse.Namespace) -> int:
    """What a deploy script runs before `unbroken reload`: exit 0 only if a new worker
    would boot (configuration valid, app imports, startup runs, probe passes)."""
    import os
    import subprocess

    config, _, hooks = _serve_config(arguments)
    if config.cmd:
        print(f"unbroken: ok: configuration valid (--cmd {config.cmd!r}: nothing to import)")
        return EXIT_OK
    assert config.app is not None
    from unbroken.master.pool import resolve_python

    directory = os.path.realpath(config.chdir or os.getcwd())
    python = resolve_python(config.python, directory)
    if not os.access(python, os.X_OK):
        raise UsageError(f"--python {python} is not an executable interpreter")
    from unbroken.worker.spec import ENV_KEY, spec_for

    # The same record a real worker gets: the app boots with the real settings (TLS
    # files, limits, threads), not the engine's defaults.
    environment = {**os.environ, ENV_KEY: spec_for(config, hooks=hooks).to_env()}
    try:
        finished = subprocess.run([python, "-m", "unbroken.worker.check"], cwd=directory,
                                  env=environment, timeout=config.boot_timeout)
    except FileNotFoundError:
        raise UsageError(f"--chdir {directory} does not exist") from None
    except subprocess.TimeoutExpired:
        print(f"unbroken: check failed: not done within --boot-timeout "
              f"{config.boot_timeout:g}s", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK if finished.returncode == 0 else EXIT_FAILED


def _control_path(arguments: argparse.Namespace) -> str:
    path = str(arguments.control or find_control_path(arguments.name))
    problem = control_path_problem(path, named=arguments.control is None)
    if problem is not None:
        raise AddressError(problem)
    return path


def _print_progress(reply: Reply) -> None:
    print(f"unbroken: {reply.message}", file=sys.stderr, flush=True)


def _finish(reply: Reply) -> int:
    stream = sys.stdout if reply.ok else sys.stderr
    print(f"unbroken: {'ok' if reply.ok else 'FAILED'}: {reply.message}", file=stream)
    if reply.details:
        print(reply.details.rstrip(), file=sys.stderr)
    return EXIT_OK if reply.ok else EXIT_FAILED


def reload(arguments: argparse.Namespace) -> int:
    if not sys.stdout.isatty():
        return _finish(call(_control_path(arguments), "reload", on_progress=_print_progress))
    from rich.console import Console

    from unbroken.cli.live import live_progress

    live, on_progress = live_progress(Console())
    with live:
        reply = call(_control_path(arguments), "reload", on_progress=on_progress)
    return _finish(reply)


def stop(arguments: argparse.Namespace) -> int:
    return _finish(call(_control_path(arguments), "stop", on_progress=_print_progress,
                        graceful=not arguments.quick))


def scale(arguments: argparse.Namespace) -> int:
    return _finish(call(_control_path(arguments), "scale", workers=arguments.workers))


def status(arguments: argparse.Namespace) -> int:
    if arguments.watch:
        from unbroken.cli.live import watch_status

        try:
            watch_status(_control_path(arguments))
        except KeyboardInterrupt:
            pass
        return EXIT_OK
    reply = call(_control_path(arguments), "status", timeout=10)
    if arguments.json:
        print(json.dumps(reply.data, indent=2))
        return EXIT_OK
    data = reply.data
    print(f"{data['name']}: master {data['master_pid']}, {data['phase']}, generation "
          f"{data['generation']}, {data['desired']} worker(s) wanted, "
          f"on {', '.join(data['binds'])}")
    for number, generation in sorted(data.get("generations", {}).items()):
        print(f"  generation {number}: {generation['directory']}")
    print(f"{'PID':>8} {'GEN':>4} {'STATE':<9} {'AGE':>8} {'REQUESTS':>9} {'IN-FLIGHT':>9} "
          f"{'RSS-MiB':>8}")
    for w in data["workers"]:
        print(f"{w['pid']:>8} {w['generation']:>4} {w['state']:<9} {w['age']:>7.1f}s "
              f"{w['requests']:>9} {w['in_flight']:>9} {w['rss_kib'] / 1024:>8.1f}")
    return EXIT_OK


def history(arguments: argparse.Namespace) -> int:
    reply = call(_control_path(arguments), "history", timeout=10)
    reloads = reply.data.get("reloads", [])
    if arguments.json:
        print(json.dumps(reloads, indent=2))
        return EXIT_OK
    print(f"{'STARTED':<19} {'SECONDS':>8} {'OUTCOME':<11} {'BEFORE':>6} {'AFTER':>6} "
          f"{'CUT':>5} {'TRIGGER':<8} {'RELEASE':<24}  REASON")
    for entry in reloads:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["started_at"]))
        # "+": old workers were still draining when last written, so more may be cut.
        cut = f"{entry.get('cut', 0)}{'+' if entry.get('draining') else ''}"
        print(f"{started:<19} {entry['seconds']:>8.2f} {entry['outcome']:<11} "
              f"{entry['generation_before']!s:>6} {entry['generation_after']!s:>6} "
              f"{cut:>5} {entry.get('trigger') or '-':<8} {entry.get('directory') or '-':<24}  "
              f"{entry['reason']}")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": serve, "check": check, "reload": reload, "status": status, "stop": stop,
    "scale": scale,
    "history": history, "drill": drill, "deploy": deploy,
}

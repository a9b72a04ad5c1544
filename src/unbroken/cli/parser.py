"""The argument parser every command uses: no prefix matching, and one line per mistake.

Rules:

1. No abbreviations (`allow_abbrev=False` on every parser): `--master` must not become
   `--master-fifo`, and a flag added later must not change what an old command line
   means.
2. A mistake is one line, `unbroken: error: ...`, and exit 2; never a usage dump (the
   usage is one `--help` away).
3. An unknown option says what to use: the flag it is closest to, or, for the flags
   people bring from gunicorn and uWSGI, what unbroken does instead.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

from unbroken.config.suggest import did_you_mean
from unbroken.errors import EXIT_USAGE

RELOAD = ("unbroken does not watch the code: reload with `unbroken reload`, SIGHUP, or "
          "--reload-on-touch FILE")

# Flags of gunicorn and uWSGI that unbroken has no flag for, and what to do instead.
FOREIGN_FLAGS: dict[str, str] = {
    "--reload": RELOAD,
    "--master": "unbroken always runs a master: remove --master",
    "--daemon": "unbroken stays in the foreground: run it under systemd, supervisor or a "
                "container",
    "-D": "unbroken stays in the foreground: run it under systemd, supervisor or a container",
    "--preload": "unbroken never preloads: every worker imports the app fresh, so a reload "
                 "loads the new code",
}


class Parser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` without prefix matching, whose errors are one line.

    Subparsers are made of the same class (argparse's default `parser_class`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        commands = commands_of(self)
        if message.startswith("the following arguments are required: COMMAND"):
            message = f"give a command ({', '.join(commands)}); see unbroken --help"
        elif (wrong := re.match(r"argument COMMAND: invalid choice: '([^']*)'", message)):
            close = did_you_mean(wrong[1], commands)
            message = f"unknown command {wrong[1]!r}: " + (
                close or f"the commands are {', '.join(commands)}")
        self.exit(EXIT_USAGE, f"{error_line(message)}\n")


def error_line(message: str) -> str:
    return f"unbroken: error: {message}"


def commands_of(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string a parser knows, `--help` included."""
    return [option for action in parser._actions for option in action.option_strings]


def subcommand(parser: argparse.ArgumentParser, name: str | None) -> argparse.ArgumentParser:
    """The parser of command `name` (the top-level parser if there is none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            chosen: argparse.ArgumentParser = action.choices[name]
            return chosen
    return parser


def unknown_argument(command: str, extra: Sequence[str], known: Iterable[str]) -> str:
    """The one line for arguments no parser took: the first unknown option, else the first
    stray word, with what to use instead."""
    options = [word for word in extra if word.startswith("-") and word != "-"]
    if not options:
        return f"unexpected argument {extra[0]!r} (see unbroken {command} --help)"
    flag = options[0].split("=", 1)[0]
    if flag in FOREIGN_FLAGS:
        return f"unknown option {flag}: {FOREIGN_FLAGS[flag]}"
    close = did_you_mean(flag, known)
    return f"unknown option {flag}: {close or f'see unbroken {command} --help'}"


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """`parse_args`, with an unknown option answered by `unknown_argument`."""
    arguments, extra = parser.parse_known_args(argv)
    if extra:
        command = getattr(arguments, "command", None)
        chosen = subcommand(parser, command)
        parser.error(unknown_argument(command or "", extra, option_strings(chosen)))
    return arguments

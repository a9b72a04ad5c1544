"""What the gunicorn and uWSGI readers share: options mapped to settings, or refused.

Rule: every option a foreign file sets is mapped to a setting, accepted because unbroken
always works so (listed in one note), or refused with one line saying why and what to
use; none is dropped without a word. The values go through the settings' own parsers,
and every problem is reported at once, in one line naming the file, and each option's
line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unbroken.config.hooks import Hooks
from unbroken.config.load import ConfigError
from unbroken.config.settings import declarations

# A setting's raw text as the option gives it (a tuple for a repeatable setting).
Raw = str | tuple[str, ...]
Mapped = dict[str, Raw]


class Refused(Exception):
    """An option is recognised and not taken; the message says why and what to use."""


@dataclass(frozen=True)
class FileSettings:
    """What a configuration file gives: parsed setting values, notes to print once at
    start, and (gunicorn) the hooks it defines."""

    values: dict[str, Any]
    notes: tuple[str, ...] = ()
    hooks: Hooks = field(default_factory=Hooks)


def text(value: Any) -> str:
    """A number or a string as the setting parsers take it."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{value!r} is not a string or a number")
    return str(value)


@dataclass
class _Source:
    option: str
    line: int
    raw: Raw


class Collector:
    """Gathers mapped options, refusals and notes for one file, then parses them."""

    def __init__(self, path: Path | str, kind: str) -> None:
        self.path = str(path)
        self.kind = kind
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.accepted: list[str] = []
        self._sources: dict[str, list[_Source]] = {}

    def where(self, option: str, line: int | None) -> str:
        return f"line {line}: {option}" if line else option

    def refuse(self, option: str, line: int | None, why: str) -> None:
        self.problems.append(f"{self.where(option, line)}: {why}")

    def accept(self, option: str) -> None:
        """Taken as it is: unbroken always works so."""
        self.accepted.append(option)

    def set(self, option: str, line: int | None, mapped: Mapped) -> None:
        for name, raw in mapped.items():
            self._sources.setdefault(name, []).append(_Source(option, line or 0, raw))

    def given(self, name: str) -> bool:
        return name in self._sources

    def values(self) -> dict[str, Any]:
        """The parsed values; ConfigError naming every problem, in one line."""
        known = {f.name: declaration for f, declaration in declarations()}
        values: dict[str, Any] = {}
        for name, sources in self._sources.items():
            declaration = known[name]
            items: list[tuple[_Source, str]] = []
            if declaration.repeatable:  # every option's items, in the file's order
                for source in sources:
                    parts = source.raw if isinstance(source.raw, tuple) else (source.raw,)
                    items.extend((source, part) for part in parts)
            elif len({source.raw for source in sources}) > 1:
                first, other = sources[0], sources[-1]
                self.refuse(other.option, other.line,
                            f"sets {name} as {self.where(first.option, first.line)} does, "
                            f"to another value; unbroken has one {name}: keep one")
                continue
            else:
                items.append((sources[0], str(sources[0].raw)))
            parsed = []
            for source, raw in items:
                try:
                    parsed.append(declaration.parse(raw))
                except ValueError as error:
                    self.refuse(source.option, source.line, f"{raw!r} {error}")
            if len(parsed) == len(items):
                values[name] = tuple(parsed) if declaration.repeatable else parsed[0]
        if self.problems:
            raise ConfigError(f"{self.kind} file {self.path}: {'; '.join(self.problems)}")
        return values

    def all_notes(self) -> tuple[str, ...]:
        notes = list(self.notes)
        if self.accepted:
            notes.insert(0, f"{self.path}: {', '.join(self.accepted)}: accepted, unbroken "
                         "always works so")
        return tuple(notes)

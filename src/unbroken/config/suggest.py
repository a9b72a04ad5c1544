"""Did you mean: the closest known name to a misspelt one, for flags, keys, variables."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

CUTOFF = 0.75  # `--wokers` finds `--workers`; `--bogus` finds nothing


def closest(word: str, known: Iterable[str]) -> str | None:
    """The known name nearest to `word`, if one is near enough (case-insensitive)."""
    names = {name.lower(): name for name in known}
    found = difflib.get_close_matches(word.lower(), list(names), n=1, cutoff=CUTOFF)
    return names[found[0]] if found else None


def did_you_mean(word: str, known: Iterable[str]) -> str | None:
    """`did you mean NAME?`, or None when nothing is close."""
    name = closest(word, known)
    return f"did you mean {name}?" if name is not None else None

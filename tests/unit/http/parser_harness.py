"""Feeding the request parser the way its tests need: whole, split, and normalised.

Rule 2 of the parser lets only `BodyData` boundaries depend on the split, so events
are compared with body bytes merged; everything else must be identical.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path
from types import ModuleType

from unbroken.http.events import BodyData, Event, RequestRejected
from unbroken.http.parser import ParserLimits, RequestParser

CORPUS_DIR = Path(__file__).parents[2] / "corpus"
LIMITS = ParserLimits()


def load_module(path: Path, name: str) -> ModuleType:
    """Corpus files are data, not a package: load one by its path."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse(pieces: list[bytes], limits: ParserLimits = LIMITS) -> list[object]:
    """Feed pieces; return events with body bytes merged (their split is free)."""
    parser = RequestParser(limits)
    events: list[Event] = []
    for piece in pieces:
        events.extend(parser.feed(piece))
    return normalise(events)


def normalise(events: list[Event]) -> list[object]:
    result: list[object] = []
    for event in events:
        if isinstance(event, BodyData):
            if result and isinstance(result[-1], bytes):
                result[-1] = result[-1] + event.data
            else:
                result.append(event.data)
        elif isinstance(event, RequestRejected):
            result.append(("rejected", event.error.status))
        else:
            result.append(event)
    return result


def splits(raw: bytes, seed: int) -> list[list[bytes]]:
    """The five deliveries gunicorn's tests use: whole, byte by byte, random pieces,
    by line, and one byte then the rest."""
    rng = random.Random(seed)
    byte_by_byte = [raw[i : i + 1] for i in range(len(raw))]
    chunks: list[bytes] = []
    position = 0
    while position < len(raw):
        step = rng.randint(1, 17)
        chunks.append(raw[position : position + step])
        position += step
    by_line = [line + b"\n" for line in raw.split(b"\n")]
    by_line[-1] = by_line[-1][:-1]
    return [[raw], byte_by_byte, chunks, by_line, [raw[:1], raw[1:]]]


def parse_under_every_split(
    raw: bytes, limits: ParserLimits = LIMITS, seed: int = 0
) -> list[object]:
    """The events for `raw`, asserted to be the same under each of the five splits."""
    reference = parse([raw], limits)
    for number, pieces in enumerate(splits(raw, seed)):
        assert parse(pieces, limits) == reference, f"split #{number} differs"
    return reference

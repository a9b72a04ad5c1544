"""Coverage-guided fuzzing of the request parser with atheris (libFuzzer), by hand:

    PYTHONPATH=src python tests/unit/http/fuzz_parser.py -atheris_runs=200000 [CORPUS_DIR]

Each input is split in two: its first byte chooses where the bytes are cut into `feed`
calls, the rest is the stream. The properties are those of test_parser_properties.py:
no exception, at most one RequestRejected and nothing after it, and the same events
whole and cut (rule 2). test_fuzz_parser_runs_briefly runs it for a few seconds in CI.
"""

from __future__ import annotations

import contextlib
import sys

try:
    import atheris  # type: ignore[import-not-found]  # only where it installs
except ImportError:  # the module still imports, for its seeds and properties
    atheris = None

# Coverage of our Python code guides the search (llhttp itself is not traced).
with (atheris.instrument_imports(include=["unbroken"]) if atheris else contextlib.nullcontext()):
    from unbroken.http.events import BodyData, Event, RequestRejected
    from unbroken.http.parser import ParserLimits, RequestParser

LIMITS = ParserLimits(request_line=256, field_size=256, fields=8, header_block=1024,
                      max_body_size=4096, chunk_extensions=64)  # fmt: skip
SEEDS = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
    b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;e=v\r\nabc\r\n0\r\nX: y\r\n\r\nGET /n HTTP/1.1\r\nHost: a\r\n\r\n",
]


def events_of(pieces: list[bytes]) -> list[object]:
    parser = RequestParser(LIMITS)
    events: list[Event] = []
    for piece in pieces:
        events.extend(parser.feed(piece))
    rejected = [i for i, e in enumerate(events) if isinstance(e, RequestRejected)]
    assert rejected in ([], [len(events) - 1]), events
    merged: list[object] = []
    for event in events:
        if isinstance(event, BodyData):
            if merged and isinstance(merged[-1], bytes):
                merged[-1] += event.data
            else:
                merged.append(event.data)
        elif isinstance(event, RequestRejected):
            merged.append(("rejected", event.error.status))
        else:
            merged.append(event)
    return merged


def test_one_input(data: bytes) -> None:
    if not data:
        return
    step, raw = data[0] % 16 + 1, data[1:]
    whole = events_of([raw])
    cut = events_of([raw[i : i + step] for i in range(0, len(raw), step)])
    assert cut == whole, (step, raw)


def main() -> None:
    for seed in SEEDS:
        test_one_input(b"\x03" + seed)
    for argument in sys.argv[1:]:
        if not argument.startswith("-"):
            seed_directory(argument)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


def seed_directory(path: str) -> None:
    """Put the seeds in an empty corpus directory, so libFuzzer starts from requests."""
    from pathlib import Path

    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    if not any(directory.iterdir()):
        for number, seed in enumerate(SEEDS):
            (directory / f"seed-{number}").write_bytes(b"\x03" + seed)


if __name__ == "__main__":
    main()

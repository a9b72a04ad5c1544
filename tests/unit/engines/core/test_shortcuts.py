"""The fast paths against the plain table path (states.py rule 3): every case of the
HTTP corpus, fed whole and byte by byte, writes the same bytes either way."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
from fakes import EchoHandler, Wire, wire

from unbroken.engines.core.states import ConnectionState


def _load_corpus() -> ModuleType:
    path = Path(__file__).parents[3] / "corpus" / "http_requests.py"
    spec = importlib.util.spec_from_file_location("unbroken_http_corpus", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CORPUS = _load_corpus()
DATE = re.compile(rb"date: [^\r]*\r\n")
CASES = [pytest.param(raw, id=name) for name, raw, _ in CORPUS.VALID + CORPUS.INVALID]
VALID = [pytest.param(raw, requests, id=name) for name, raw, requests in CORPUS.VALID]
INVALID = [pytest.param(raw, status, id=name) for name, raw, status in CORPUS.INVALID]


def feed(w: Wire, raw: bytes, bytewise: bool) -> None:
    for piece in ([raw[i:i + 1] for i in range(len(raw))] if bytewise else [raw]):
        if w.connection.state is not ConnectionState.CLOSED:
            w.send(piece)


def written(raw: bytes, *, shortcuts: bool, bytewise: bool, chunked: bool) -> tuple[bytes, str]:
    with wire(EchoHandler(chunked=chunked), shortcuts=shortcuts) as w:
        feed(w, raw, bytewise)
        w.advance(0)  # deliver a connection_lost that a close scheduled
        # The core's own answers (400, 408...) carry the wall clock's Date: not compared.
        return DATE.sub(b"date: -\r\n", w.transport.take()), w.connection.state.name


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("raw", CASES)
def test_the_fast_paths_write_what_the_plain_path_writes(raw: bytes, bytewise: bool,
                                                        chunked: bool) -> None:
    fast = written(raw, shortcuts=True, bytewise=bytewise, chunked=chunked)
    plain = written(raw, shortcuts=False, bytewise=bytewise, chunked=chunked)
    assert fast == plain
    assert fast[0]


@pytest.mark.parametrize(("raw", "requests"), VALID)
def test_a_valid_case_is_answered_once_per_request(raw: bytes,
                                                   requests: list[tuple[bytes, bytes, bytes]]
                                                   ) -> None:
    data, _ = written(raw, shortcuts=True, bytewise=False, chunked=False)
    answers = data.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert len(answers) == len(requests)
    for answer, (method, target, body) in zip(answers, requests, strict=True):
        assert answer.endswith(b"%s %s %d %s" % (method, target, len(body), body))


@pytest.mark.parametrize(("raw", "status"), INVALID)
def test_an_invalid_case_is_answered_with_its_status_and_closed(raw: bytes, status: int) -> None:
    data, state = written(raw, shortcuts=False, bytewise=False, chunked=False)
    last = data.rsplit(b"HTTP/1.1 ", 1)[-1]  # a valid request before the bad one is served
    assert last.startswith(b"%d " % status)
    assert state in ("CLOSING", "CLOSED")

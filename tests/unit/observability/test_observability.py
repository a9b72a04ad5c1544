"""History, readiness, latency counters and the metrics text, with plain data."""

from __future__ import annotations

from pathlib import Path

from unbroken.messages import Heartbeat, decode, encode
from unbroken.observability.history import ReloadEntry, ReloadHistory
from unbroken.observability.latency import BUCKETS, ResponseStats, status_class
from unbroken.observability.metrics import MetricsBook, render, restart_cause
from unbroken.observability.ready import readiness
from unbroken.rollout.lifecycle import ExitCause


def _entry(outcome: str, index: int = 0) -> ReloadEntry:
    return ReloadEntry(1_700_000_000.0 + index, 1.5, outcome, 1, 2, 2, "")


def test_history_is_bounded_and_survives_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "ctl.sock.history.json")
    history = ReloadHistory(path, limit=3)
    for index in range(5):
        history.add(_entry("ok", index))
    again = ReloadHistory(path, limit=3)
    again.load()
    assert [e.started_at for e in again.entries] == [1_700_000_002.0, 1_700_000_003.0,
                                                      1_700_000_004.0]
    assert not list(tmp_path.glob(".history-*"))  # the temporary file was renamed


def test_unreadable_history_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "h.json"
    path.write_text("{not json")
    history = ReloadHistory(str(path))
    history.load()
    assert list(history.entries) == []


def test_readiness() -> None:
    assert readiness("serving")[0] == readiness("reloading")[0] == 200
    assert readiness("stopping")[0] == readiness("starting")[0] == 503


def test_response_stats_and_heartbeat_round_trip() -> None:
    stats = ResponseStats()
    stats.observe(200, 0.003)
    stats.observe(503, 20.0)
    stats.observe(None, 0.1)
    assert stats.statuses == {"2xx": 1, "5xx": 1, "none": 1}
    assert stats.latency_counts[0] == 1 and stats.latency_counts[len(BUCKETS)] == 1
    beat = decode(encode(Heartbeat(3, 0, 1, 100, **stats.heartbeat_fields())))
    assert isinstance(beat, Heartbeat) and beat.statuses["5xx"] == 1
    assert decode(b'{"type":"Heartbeat","requests":1,"in_flight":0,"connections":0,'
                  b'"rss_kib":1}') == Heartbeat(1, 0, 0, 1)  # old workers stay valid
    assert status_class(404) == "4xx"


def test_counters_never_go_down_when_a_worker_exits() -> None:
    beat = Heartbeat(2, 1, 1, 10, {"2xx": 2}, (1, 1, *[0] * len(BUCKETS)), 0.02)
    book = MetricsBook()
    before = render(book, [("ready", 3, beat)])
    book.worker_gone(beat, restart_cause(ExitCause.CRASHED), 3)
    after = render(book, [])
    per_generation = 'unbroken_generation_http_requests_total{generation="3",class="2xx"} 2'
    assert per_generation in before and per_generation in after
    line = 'unbroken_http_requests_total{class="2xx"} 2'
    assert line in before and line in after
    assert 'unbroken_worker_restarts_total{cause="crashed"} 1' in after
    assert 'unbroken_http_request_duration_seconds_bucket{le="+Inf"} 2' in after
    assert 'unbroken_http_request_duration_seconds_bucket{le="0.005"} 1' in after


def test_reloads_and_restart_causes() -> None:
    book = MetricsBook()
    book.reload_finished("ok", 1.2)
    book.reload_finished("aborted", 0.1)
    text = render(book, [])
    assert 'unbroken_reloads_total{outcome="aborted"} 1' in text
    assert "unbroken_reload_duration_seconds_count 2" in text
    labels = {cause: restart_cause(cause) for cause in ExitCause}
    assert labels == {ExitCause.DRAINED: None, ExitCause.STOPPED: None,
                      ExitCause.NOT_NEEDED: None, ExitCause.BOOT_FAILED: "boot_failed",
                      ExitCause.SILENT: "timeout", ExitCause.KILLED: "killed",
                      ExitCause.CRASHED: "crashed"}

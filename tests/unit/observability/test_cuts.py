"""Requests cut at --graceful-timeout: descriptions, the report, attribution, history."""

from __future__ import annotations

import json
from pathlib import Path

from unbroken.messages import decode, encode
from unbroken.observability.cuts import (
    MAX_LOG_LINES,
    MAX_SAMPLES,
    CutOwner,
    CutRequest,
    cut_log_lines,
    cut_owner,
    cut_report,
    serving_message,
)
from unbroken.observability.history import ReloadEntry, ReloadHistory
from unbroken.observability.metrics import MetricsBook, render

SLOW = CutRequest("GET", "/slow", 1.04)


def test_one_log_line_per_cut_request_names_the_worker_and_generation() -> None:
    [line] = cut_log_lines([SLOW], pid=4321, worker=2, generation=7)
    assert line.startswith("worker 4321 (id 2, generation 7) cut GET /slow after 1.0s")
    assert cut_log_lines([], 1, 1, 1) == []


def test_a_huge_cut_is_logged_in_a_bounded_number_of_lines() -> None:
    lines = cut_log_lines([SLOW] * (MAX_LOG_LINES + 30), pid=1, worker=1, generation=1)
    assert len(lines) == MAX_LOG_LINES + 1 and "30 more request(s)" in lines[-1]


def test_report_counts_all_and_describes_a_few_and_survives_the_channel() -> None:
    assert cut_report([]) is None
    report = cut_report([SLOW] * (MAX_SAMPLES + 3))
    assert report is not None
    assert report.count == MAX_SAMPLES + 3 and len(report.samples) == MAX_SAMPLES
    assert report.samples[0] == "GET /slow after 1.0s"
    assert decode(encode(report)) == report  # JSON lists become tuples again


def test_cut_owner() -> None:
    # Generation 1 was replaced by a reload whose entry is written: that entry.
    assert cut_owner(1, {1}, rolling_from=None) is CutOwner.REPLACING_RELOAD
    assert cut_owner(1, {1}, rolling_from=2) is CutOwner.REPLACING_RELOAD  # another reload runs
    # A surge rollout drained a worker of the serving generation before completing.
    assert cut_owner(2, set(), rolling_from=2) is CutOwner.ROLLOUT
    # No reload drained it: scale down, --max-requests, or the new generation itself.
    assert cut_owner(2, set(), rolling_from=None) is CutOwner.NONE
    assert cut_owner(3, {1}, rolling_from=2) is CutOwner.NONE


def test_serving_message_says_the_cut_only_when_there_is_one() -> None:
    assert serving_message(2, 0) == "generation 2 serving"
    assert serving_message(2, 3).startswith("generation 2 serving; 3 request(s)")


def test_entry_is_amended_as_old_workers_drain_and_saved(tmp_path: Path) -> None:
    path = tmp_path / "ctl.sock.history.json"
    history = ReloadHistory(str(path))
    entry = ReloadEntry(1_700_000_000.0, 1.2, "ok", 1, 2, 2, draining=2)
    history.add(entry)
    first = entry.after_worker_drained(1)
    assert (first.cut, first.draining) == (1, 1)
    assert history.replace(entry, first)
    last = first.after_worker_drained(0)
    assert (last.cut, last.draining) == (1, 0)  # draining 0: the count is final
    assert history.replace(first, last)
    assert not history.replace(entry, last)  # no longer there
    saved = json.loads(path.read_text())["reloads"]
    assert [(r["cut"], r["draining"]) for r in saved] == [(1, 0)]


def test_old_history_files_without_cut_still_load(tmp_path: Path) -> None:
    path = tmp_path / "h.json"
    path.write_text(json.dumps({"v": 1, "reloads": [{
        "started_at": 1.0, "seconds": 1.0, "outcome": "ok", "generation_before": 1,
        "generation_after": 2, "target": 2, "reason": ""}]}))
    history = ReloadHistory(str(path))
    history.load()
    assert [(e.cut, e.draining) for e in history.entries] == [(0, 0)]


def test_cut_counter_is_always_exposed() -> None:
    book = MetricsBook()
    assert "\nunbroken_requests_cut_total 0\n" in render(book, [])
    book.requests_cut += 2
    assert "\nunbroken_requests_cut_total 2\n" in render(book, [])

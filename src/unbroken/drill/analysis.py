"""Pure analysis of a drill: what happened to every request, and during each reload.

Rules this module keeps:

1. Input is plain data (loadgen Samples, ReloadRecords, monotonic times); no I/O.
2. A drill passes only if no request failed and every reload ended as expected
   (a good release served, the broken one refused).
3. Times in the timeline are seconds since the drill's `origin`, bucketed by whole
   second of each request's *start*.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from unbroken.loadgen import Sample, Summary, percentile, summarize

UNKNOWN_VERSION = "?"


@dataclass(frozen=True)
class ReloadRecord:
    """One reload the drill asked for: when, how it ended, and what it expected."""

    label: str
    expect_ok: bool
    requested_at: float  # monotonic
    ended_at: float  # monotonic: the verdict arrived (full rollout, or the refusal)
    ok: bool
    message: str

    @property
    def as_expected(self) -> bool:
        return self.ok == self.expect_ok

    @property
    def seconds(self) -> float:
        return self.ended_at - self.requested_at


@dataclass(frozen=True)
class Second:
    """One bucket of the timeline."""

    offset: int
    requests: int
    errors: int
    p50: float
    p99: float
    versions: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    """The master's status at one moment: each worker's generation and requests served
    (its counter as of its last heartbeat)."""

    at: float  # monotonic
    workers: dict[int, tuple[int, int]]  # pid -> (generation, requests served)


# Where the versions came from: the app's own answers, or the master's worker counters.
FROM_APP, FROM_MASTER = "app", "master"


@dataclass(frozen=True)
class DrillResult:
    origin: float
    samples: list[Sample]
    reloads: list[ReloadRecord]
    overall: Summary
    windows: list[Summary]
    timeline: list[Second]
    versions: dict[str, int]
    versions_from: str = FROM_APP

    @property
    def passed(self) -> bool:
        return self.overall.failures == 0 and all(r.as_expected for r in self.reloads)


def version_of(sample: Sample) -> str:
    """The release that answered, from a JSON body with a "release" key (the example
    app says so); other apps' answers count as one unknown version."""
    if sample.error is not None:
        return UNKNOWN_VERSION
    try:
        payload = json.loads(sample.body)
    except (ValueError, UnicodeDecodeError):
        return UNKNOWN_VERSION
    release = payload.get("release") if isinstance(payload, dict) else None
    return str(release) if release is not None else UNKNOWN_VERSION


def timeline(samples: list[Sample], origin: float) -> list[Second]:
    buckets: dict[int, list[Sample]] = {}
    for sample in samples:
        buckets.setdefault(max(0, math.floor(sample.start - origin)), []).append(sample)
    seconds = []
    for offset in range(max(buckets, default=-1) + 1):
        bucket = buckets.get(offset, [])
        latencies = sorted(s.latency for s in bucket)
        versions: dict[str, int] = {}
        for sample in bucket:
            if sample.error is None:
                name = version_of(sample)
                versions[name] = versions.get(name, 0) + 1
        seconds.append(Second(offset, len(bucket), sum(1 for s in bucket if s.error),
                              percentile(latencies, 0.5), percentile(latencies, 0.99), versions))
    return seconds


def generation_name(number: int) -> str:
    return f"generation {number}"


def served_by_generation(snapshots: list[Snapshot], origin: float
                         ) -> tuple[dict[str, int], dict[int, dict[str, int]]]:
    """Requests each generation served over the snapshots, in all and per second (of the
    snapshot that saw them). What the workers served before the first snapshot is not
    counted; a worker first seen later counts from its start."""
    totals: dict[str, int] = {}
    per_second: dict[int, dict[str, int]] = {}
    last: dict[int, int] = {}
    for index, snapshot in enumerate(sorted(snapshots, key=lambda s: s.at)):
        offset = max(0, math.floor(snapshot.at - origin))
        for pid, (generation, served) in snapshot.workers.items():
            before = last.get(pid, served if index == 0 else 0)
            last[pid] = max(before, served)
            if served <= before:
                continue
            name = generation_name(generation)
            totals[name] = totals.get(name, 0) + served - before
            bucket = per_second.setdefault(offset, {})
            bucket[name] = bucket.get(name, 0) + served - before
    return totals, per_second


def app_says_its_version(samples: list[Sample]) -> bool:
    return any(version_of(s) != UNKNOWN_VERSION for s in samples if s.error is None)


def analyse(samples: list[Sample], reloads: list[ReloadRecord], origin: float,
            snapshots: list[Snapshot] | None = None) -> DrillResult:
    """`snapshots`: the master's status over the drill; when the app does not say which
    version answered, the versions are the generations, from the workers' counters."""
    versions: dict[str, int] = {}
    for sample in samples:
        if sample.error is None:
            name = version_of(sample)
            versions[name] = versions.get(name, 0) + 1
    seconds = timeline(samples, origin)
    versions_from = FROM_APP
    if snapshots and not app_says_its_version(samples):
        versions, per_second = served_by_generation(snapshots, origin)
        seconds = [dataclasses.replace(s, versions=per_second.get(s.offset, {}))
                   for s in seconds]
        versions_from = FROM_MASTER
    return DrillResult(
        origin=origin, samples=samples, reloads=reloads, overall=summarize(samples),
        windows=[summarize(samples, (r.requested_at, r.ended_at)) for r in reloads],
        timeline=seconds, versions=versions, versions_from=versions_from,
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def describe(summary: Summary) -> str:
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(summary.by_kind.items()))
    return (f"{summary.requests} requests, {summary.failures} failed"
            f"{f' ({kinds})' if kinds else ''}; p50 {_ms(summary.p50)}, "
            f"p99 {_ms(summary.p99)}, max {_ms(summary.max)}")


def text_report(result: DrillResult) -> list[str]:
    """The lines the CLI prints: overall, each reload and its window, versions, verdict."""
    lines = [f"overall: {describe(result.overall)}"]
    for record, window in zip(result.reloads, result.windows, strict=True):
        verdict = "served" if record.ok else "refused"
        mark = "as expected" if record.as_expected else "UNEXPECTED"
        lines.append(f"reload {record.label}: {verdict} in {record.seconds:.2f}s ({mark}): "
                     f"{record.message}")
        lines.append(f"  during it: {describe(window)}")
    lines.append(versions_line(result))
    lines.append("PASS: zero failed requests, every reload ended as expected" if result.passed
                 else "FAIL: " + failure_reason(result))
    return lines


def versions_line(result: DrillResult) -> str:
    """Which version answered: as the app says, or else by generation, from the master."""
    served = ", ".join(f"{name} {count}" for name, count in
                       sorted(result.versions.items(), key=lambda item: _order(item[0])))
    if result.versions_from == FROM_APP:
        return f"answered by version: {served or 'none'}"
    answered = result.overall.requests - result.overall.failures
    missed = answered - sum(result.versions.values())
    note = f"; {missed} not counted yet when their worker exited" if missed > 0 else ""
    return (f"answered by version (the app does not say; the master's request counters by "
            f"worker generation): {served or 'none'}{note}")


def _order(name: str) -> tuple[int, str]:
    """generation 10 after generation 9."""
    number = name.removeprefix("generation ")
    return (int(number), "") if number.isdigit() else (0, name)


def failure_reason(result: DrillResult) -> str:
    reasons = []
    if result.overall.failures:
        reasons.append(f"{result.overall.failures} request(s) failed")
    reasons.extend(f"reload {r.label} {'served' if r.ok else 'was refused'}, expected "
                   f"{'served' if r.expect_ok else 'refused'}"
                   for r in result.reloads if not r.as_expected)
    return "; ".join(reasons) or "no reason"

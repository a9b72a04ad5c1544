"""The drill's pure parts: plan, analysis, verdict and the HTML report, from plain data."""

from __future__ import annotations

from unbroken.drill.analysis import ReloadRecord, analyse, text_report, version_of
from unbroken.drill.html import render
from unbroken.drill.run import plan_steps
from unbroken.loadgen import Sample


def _ok(start: float, release: str, latency: float = 0.002) -> Sample:
    return Sample(start, latency, 200, None, f'{{"release": "{release}", "pid": 1}}'.encode())


def test_plan_puts_the_broken_release_after_the_first_good_one() -> None:
    steps = plan_steps(2, broken=True, bundled=True)
    assert [(s.expect_ok, s.release and s.release[0]) for s in steps] == [
        (True, "v2"), (False, "broken"), (True, "v3")]
    assert plan_steps(0, broken=True, bundled=True)[0].expect_ok is False
    assert all(s.release is None for s in plan_steps(2, broken=False, bundled=False))


def test_a_clean_drill_passes_and_counts_versions_per_second() -> None:
    samples = [_ok(100.1, "v1"), _ok(100.5, "v1"), _ok(101.2, "v2"), _ok(101.3, "v2")]
    reload = ReloadRecord("v2", True, 100.9, 101.1, True, "generation 2 serving")
    result = analyse(samples, [reload], origin=100.0)
    assert result.passed
    assert [s.versions for s in result.timeline] == [{"v1": 2}, {"v2": 2}]
    assert result.windows[0].requests == 0  # nothing in flight between 100.9 and 101.1
    assert text_report(result)[-1].startswith("PASS")


def test_a_failed_request_or_an_unexpected_verdict_fails_the_drill() -> None:
    failed = Sample(100.2, 0.01, None, "reset", b"")
    result = analyse([_ok(100.1, "v1"), failed], [], origin=100.0)
    assert not result.passed and result.overall.by_kind == {"reset": 1}
    accepted_broken = ReloadRecord("broken", False, 100.0, 100.1, True, "served")
    result = analyse([_ok(100.1, "v1")], [accepted_broken], origin=100.0)
    assert not result.passed
    assert "reload broken served, expected refused" in text_report(result)[-1]


def test_version_of_other_apps_is_unknown() -> None:
    assert version_of(Sample(0, 0, 200, None, b"hello")) == "?"
    assert version_of(_ok(0, "v7")) == "v7"


def test_report_is_self_contained_with_four_charts_and_shaded_windows() -> None:
    samples = [_ok(100 + i / 10, "v1" if i < 15 else "v2") for i in range(30)]
    reload = ReloadRecord("v2 <b>", True, 101.0, 101.4, True, "ok")
    page = render(analyse(samples, [reload], origin=100.0), "example")
    for chart in ("chart-requests", "chart-errors", "chart-latency", "chart-versions"):
        assert f'<svg id="{chart}"' in page
    assert page.count('class="reload-window"') == 4
    assert "<b>" not in page and "http" not in page.replace("http://www.w3.org/2000/svg", "")

"""Issue 15's goals as bench/speed.py reports them: each measured, with its ratio and verdict.

`speed.py --goals tails,reload,curve` runs the modules named here after its own table;
each returns its goals (one line each in the report's Goals section) and the detail
tables behind them. A goal carries its figure, a ratio (unbroken's over what it is
held to, so 1.00 is the bound) and met / not met, or None when nothing could be
measured; the section never asserts, the bench exits 0 either way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from speed_servers import Programs, Server


@dataclass(frozen=True)
class Context:
    """What a goal module needs from speed.py's invocation."""

    servers: tuple[Server, ...]  # speed.py's --servers: the modules measure those they use
    programs: Programs
    scratch: Path  # a temp dir, removed after the run
    duration: int  # seconds per measured load (wrk takes whole seconds)
    chart_stem: Path | None  # where a module may write <stem>-<name>.png; None: no charts
    reload_runs: int = 5
    quick: bool = False


@dataclass(frozen=True)
class Goal:
    item: str  # the item, as the section groups them: "3 fair tails"
    claim: str  # what must hold, in words
    figure: str  # the numbers behind the verdict
    ratio: float | None  # unbroken's figure over its bound: at most 1.00 meets it
    met: bool | None  # None: not measured (see figure)
    verdict_text: str = ""  # instead of met / not met, for a goal that asks for a statement


@dataclass
class Report:
    goals: list[Goal] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # Markdown lines after the section
    files: list[Path] = field(default_factory=list)  # charts written


Runner = Callable[[Context], Report]


def verdict(goal: Goal) -> str:
    if goal.verdict_text:
        return goal.verdict_text
    return "not measured" if goal.met is None else "met" if goal.met else "not met"


def at_most(mine: float | None, bound: float | None) -> tuple[float | None, bool | None]:
    """The ratio mine / bound and whether mine <= bound; (None, None) if either is missing."""
    if mine is None or bound is None or bound <= 0:
        return None, None
    return mine / bound, mine <= bound


def render(goals: list[Goal]) -> list[str]:
    """The one Goals section: every goal, its figure, its ratio and met / not met."""
    if not goals:
        return []
    lines = [
        "## Goals (issue 15)",
        "",
        "*ratio*: unbroken's figure over the bound it is held to (≤ 1.00 meets it).",
        "",
        "| item | goal | figure | ratio | verdict |",
        "|---|---|---|---:|---|",
    ]
    for goal in goals:
        ratio = "—" if goal.ratio is None else f"{goal.ratio:.2f}"
        lines.append(f"| {goal.item} | {goal.claim} | {goal.figure.replace('|', '/')} "
                     f"| {ratio} | **{verdict(goal)}** |")  # fmt: skip
    judged = [goal for goal in goals if not goal.verdict_text]
    met = sum(1 for goal in judged if goal.met)
    lines += ["", f"{met} of {len(judged)} met.", ""]
    return lines

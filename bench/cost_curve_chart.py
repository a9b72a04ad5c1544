"""Draw bench/cost_curve.py's chart: run by the peers' venv Python, which has matplotlib.

Input: a JSON file {"title": str, "lines": [{"label": str, "levels": [int],
"rps": [float|null], "rss": [float|null]}]}: one line per server and worker count, the
x axis idle connections per worker (log for req/s, linear for the mean RSS per
worker on the right). A null point (not measured) is left out of its line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display here
import matplotlib.pyplot as plt  # after the backend is chosen


def _plot(axis: Any, lines: list[dict[str, Any]], key: str, title: str, unit: str,
          *, log_x: bool) -> None:
    for line in lines:
        points = [(x, y) for x, y in zip(line["levels"], line[key], strict=True) if y is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            axis.plot(xs, ys, marker="o", label=line["label"])
    if log_x:
        axis.set_xscale("log")
    axis.set_xlabel("idle kept-alive connections per worker")
    axis.set_ylabel(unit)
    axis.set_title(title)
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)


def draw(data: dict[str, Any], output: Path) -> None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    _plot(left, data["lines"], "rps", "req/s (wrk -t2 -c32 beside the idle ones)", "req/s",
          log_x=True)
    # Linear: memory grows by the connection, and a log axis would draw that as a bend.
    _plot(right, data["lines"], "rss", "RSS per worker", "MiB", log_x=False)
    figure.suptitle(data["title"], fontsize=11)
    figure.tight_layout()
    figure.savefig(output, dpi=110)


if __name__ == "__main__":
    draw(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))

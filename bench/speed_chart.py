"""Draw bench/speed.py's ratio chart: run by the peers' venv Python, which has matplotlib.

unbroken's own environment needs no plotting library this way. Input: a JSON file
{"title": str, "panels": [{"name": str, "cases": [str], "peers": {peer: [ratio|null]}}]};
a null ratio (failed run, or not comparable) leaves its bar out.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display here
import matplotlib.pyplot as plt  # after the backend is chosen
from matplotlib.ticker import FuncFormatter, NullFormatter

FINE_TICKS = (0.1, 0.2, 0.33, 0.5, 0.67, 0.8, 1, 1.25, 1.5, 2, 3, 5, 10)
COARSE_TICKS = (0.1, 0.25, 0.5, 1, 2, 4, 10)
# Bars beyond this factor either way are cut at it and labelled with their real value:
# one pathological cell (a server that cannot frame a stream) must not flatten the rest.
CLIP = 10.0


def _panel(axis: Any, panel: dict[str, Any]) -> None:
    cases: list[str] = panel["cases"]
    peers: dict[str, list[float | None]] = panel["peers"]
    width = 0.8 / max(len(peers), 1)
    colors = plt.get_cmap("tab10").colors
    for index, (peer, ratios) in enumerate(peers.items()):
        color = colors[index % len(colors)]
        for case, value in enumerate(ratios):
            x = case + (index - (len(peers) - 1) / 2) * width
            if value is None:  # failed, or not comparable: say so where the bar would be
                axis.text(x, 1.0, "n/a", ha="center", va="bottom", fontsize=7, color=color)
                continue
            # From 1.0, so a bar points up where unbroken is faster and down where slower.
            shown = min(max(value, 1 / CLIP), CLIP)
            bar = axis.bar(x, shown - 1.0, width, bottom=1.0, color=color)
            axis.bar_label(bar, labels=[_label(value, clipped=shown != value)], fontsize=7,
                           padding=1)  # fmt: skip
        axis.bar(0, 0, 0, color=color, label=peer)  # one legend entry per peer
    _ratio_axis(axis, [min(max(r, 1 / CLIP), CLIP) for rs in peers.values() for r in rs if r])
    axis.set_xticks(range(len(cases)), cases, fontsize=9)
    axis.set_title(f"{panel['name']}: unbroken req/s ÷ peer req/s (above 1: unbroken faster)")
    axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=len(peers))


def _label(value: float, *, clipped: bool) -> str:
    text = f"{value:.2f}" if value < 10 else f"{value:.0f}"
    return f"{text} (cut)" if clipped else text


def _ratio_axis(axis: Any, ratios: list[float]) -> None:
    """A log axis, so 2x and 0.5x look alike, with plain ratio labels."""
    low, high = min([*ratios, 1.0]) / 1.3, max([*ratios, 1.0]) * 1.3
    axis.set_yscale("log")
    axis.set_ylim(low, high)
    ticks = FINE_TICKS if high / low < 12 else COARSE_TICKS
    axis.set_yticks([t for t in ticks if low <= t <= high])
    axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}x"))
    axis.yaxis.set_minor_formatter(NullFormatter())
    axis.axhline(1.0, color="black", linewidth=1)
    axis.grid(axis="y", alpha=0.3)


def draw(data: dict[str, Any], output: Path) -> None:
    panels = data["panels"]
    figure, axes = plt.subplots(len(panels), 1, figsize=(12, 5 * len(panels)), squeeze=False)
    for axis, panel in zip(axes[:, 0], panels, strict=True):
        _panel(axis, panel)
    figure.suptitle(data["title"], fontsize=11)
    figure.tight_layout()
    figure.savefig(output, dpi=110)


if __name__ == "__main__":
    draw(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))

"""The drill's HTML report: one self-contained file, charts as inline SVG.

No scripts, no stylesheets or fonts from elsewhere: the file opens offline, can be
attached to a ticket, and renders the same in any browser. Four panels share the
time axis (seconds since the load began); every reload window is shaded in each.
"""

from __future__ import annotations

import html
import time

from unbroken.drill.analysis import DrillResult, ReloadRecord, Second, describe

WIDTH, PANEL_HEIGHT, LEFT, RIGHT, TOP = 820, 140, 60, 20, 22
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f")


class _Axis:
    """Maps a time offset (seconds) to an x pixel."""

    def __init__(self, span: float) -> None:
        self.span = max(span, 1.0)

    def x(self, seconds: float) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * min(max(seconds, 0.0), self.span) / self.span


def _shading(axis: _Axis, result: DrillResult) -> list[str]:
    parts = []
    for record in result.reloads:
        start = axis.x(record.requested_at - result.origin)
        end = max(axis.x(record.ended_at - result.origin), start + 1)
        fill = "#d9ead3" if record.ok else "#f4cccc"
        parts.append(f'<rect class="reload-window" x="{start:.1f}" y="{TOP}" '
                     f'width="{end - start:.1f}" height="{PANEL_HEIGHT - TOP - 18}" '
                     f'fill="{fill}"><title>{html.escape(_window_title(record))}</title></rect>')
    return parts


def _window_title(record: ReloadRecord) -> str:
    return f"reload {record.label}: {'served' if record.ok else 'refused'} " \
           f"in {record.seconds:.2f}s"


def _y(value: float, top: float) -> float:
    bottom = PANEL_HEIGHT - 18
    return bottom - (bottom - TOP) * (value / top if top > 0 else 0.0)


def _frame(chart_id: str, title: str, top: float, unit: str, body: list[str],
           shading: list[str]) -> str:
    bottom = PANEL_HEIGHT - 18
    return "\n".join([
        f'<svg id="{chart_id}" class="chart" xmlns="http://www.w3.org/2000/svg" '
        f'width="{WIDTH}" height="{PANEL_HEIGHT}" viewBox="0 0 {WIDTH} {PANEL_HEIGHT}">',
        f'<text x="{LEFT}" y="14" font-size="13" font-weight="bold">{html.escape(title)}</text>',
        *shading,
        f'<line x1="{LEFT}" y1="{bottom}" x2="{WIDTH - RIGHT}" y2="{bottom}" stroke="#888"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="#888"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 10}" font-size="10" text-anchor="end">'
        f'{top:.4g}{unit}</text>',
        f'<text x="{LEFT - 4}" y="{bottom}" font-size="10" text-anchor="end">0</text>',
        *body, "</svg>",
    ])


def _bars(axis: _Axis, seconds: list[Second], values: list[float], top: float,
          color: str, css: str) -> list[str]:
    width = max(axis.x(1) - axis.x(0) - 1, 1)
    bottom = PANEL_HEIGHT - 18
    return [f'<rect class="{css}" x="{axis.x(s.offset):.1f}" y="{_y(v, top):.1f}" '
            f'width="{width:.1f}" height="{bottom - _y(v, top):.1f}" fill="{color}">'
            f'<title>{s.offset}s: {v:g}</title></rect>'
            for s, v in zip(seconds, values, strict=True) if v > 0]


def _line(axis: _Axis, seconds: list[Second], values: list[float], top: float,
          color: str, css: str) -> str:
    points = " ".join(f"{axis.x(s.offset + 0.5):.1f},{_y(v, top):.1f}"
                      for s, v in zip(seconds, values, strict=True))
    return (f'<polyline class="{css}" points="{points}" fill="none" stroke="{color}" '
            f'stroke-width="1.5"/>')


def _version_bars(axis: _Axis, seconds: list[Second], colors: dict[str, str]) -> list[str]:
    width = max(axis.x(1) - axis.x(0) - 1, 1)
    parts = []
    for second in seconds:
        total = sum(second.versions.values())
        below = 0.0
        for name, count in sorted(second.versions.items()):
            share = count / total
            y_top, y_bottom = _y(below + share, 1.0), _y(below, 1.0)
            parts.append(f'<rect class="version-share" x="{axis.x(second.offset):.1f}" '
                         f'y="{y_top:.1f}" width="{width:.1f}" height="{y_bottom - y_top:.1f}" '
                         f'fill="{colors[name]}"><title>{second.offset}s: '
                         f'{html.escape(name)} {share:.0%}</title></rect>')
            below += share
    return parts


def charts(result: DrillResult) -> list[str]:
    seconds = result.timeline
    axis = _Axis(max([len(seconds)] + [r.ended_at - result.origin for r in result.reloads]))
    shading = _shading(axis, result)
    rates = [float(s.requests) for s in seconds]
    errors = [float(s.errors) for s in seconds]
    p50 = [s.p50 * 1000 for s in seconds]
    p99 = [s.p99 * 1000 for s in seconds]
    top_rate, top_errors = max(rates, default=1.0) or 1.0, max(errors, default=0.0) or 1.0
    top_latency = max(p99, default=1.0) or 1.0
    names = sorted({name for s in seconds for name in s.versions})
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    step = max([70] + [7 * len(name) + 20 for name in names])  # "generation 12" is wider
    legend = [f'<text x="{WIDTH - RIGHT - step * (len(names) - i)}" y="14" font-size="11" '
              f'fill="{colors[name]}">■ {html.escape(name)}</text>'
              for i, name in enumerate(names)]
    return [
        _frame("chart-requests", "requests per second", top_rate, "/s",
               _bars(axis, seconds, rates, top_rate, "#4e79a7", "requests"), shading),
        _frame("chart-errors", "failed requests per second", top_errors, "/s",
               _bars(axis, seconds, errors, top_errors, "#e15759", "errors"), shading),
        _frame("chart-latency", "latency p50 (blue) and p99 (orange) per second", top_latency,
               " ms", [_line(axis, seconds, p50, top_latency, "#4e79a7", "latency-p50"),
                       _line(axis, seconds, p99, top_latency, "#f28e2b", "latency-p99")],
               shading),
        _frame("chart-versions", "share of answers by version", 1.0, "",
               [*_version_bars(axis, seconds, colors), *legend], shading),
    ]


def _table(result: DrillResult) -> str:
    rows = [f"<tr><td>all</td><td></td><td></td><td>{html.escape(describe(result.overall))}"
            "</td></tr>"]
    for record, window in zip(result.reloads, result.windows, strict=True):
        verdict = ("served" if record.ok else "refused") + (
            "" if record.as_expected else " (UNEXPECTED)")
        rows.append(f"<tr><td>reload {html.escape(record.label)}</td><td>{verdict}</td>"
                    f"<td>{record.seconds:.2f} s</td><td>{html.escape(describe(window))}</td>"
                    "</tr>")
    return ("<table><tr><th>period</th><th>verdict</th><th>request to full rollout</th>"
            "<th>requests during it</th></tr>" + "".join(rows) + "</table>")


def render(result: DrillResult, title: str) -> str:
    verdict = "PASS" if result.passed else "FAIL"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>unbroken drill: {verdict}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:900px}"
        "td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;font-size:13px}"
        "table{border-collapse:collapse;margin:1em 0}.PASS{color:#2a7}.FAIL{color:#c33}"
        "</style></head><body>",
        f'<h1>unbroken drill: <span id="verdict" class="{verdict}">{verdict}</span></h1>',
        f"<p>{html.escape(title)}, {stamp}. Shaded: reload windows, from the request to "
        "the verdict (green served, red refused).</p>",
        _table(result), *charts(result), "</body></html>",
    ])

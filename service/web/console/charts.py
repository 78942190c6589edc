"""Charts drawn on the server as inline SVG: no chart library, no script, nothing from a CDN.

The page's Content-Security-Policy allows no inline style, so the SVG carries no ``style``
attribute: its colours come from classes in console.css (``series-0`` ...). Each chart is an
``<svg role="img">`` with a ``<title>`` and a ``<desc>`` that says in words what it shows (totals and
the highest point), for those who do not see it. Every text in it is escaped.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from html import escape
from typing import NamedTuple

from markupsafe import Markup

WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 48, 8, 10, 24  # room for the axis labels
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM


class Series(NamedTuple):
    name: str
    values: Sequence[float | None]  # one per bucket; None: no value there (a gap in a line)


def nice_max(value: float) -> float:
    """The top of the axis: ``value`` rounded up to 1, 2 or 5 times a power of ten (at least 1)."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.2g}"


def _frame(
    chart_id: str, title: str, desc: str, top: float, buckets: Sequence[dt.datetime], unit: str
) -> list[str]:
    """The opening of the SVG, its title and description, the grid and the axis labels."""
    parts = [
        f'<svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
        f'<desc id="{escape(chart_id)}-desc">{escape(desc)}</desc>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = TOP + PLOT_H * (1 - fraction)
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}"/>')
        label = f"{_number(top * fraction)}{(' ' + unit) if unit and fraction == 1.0 else ''}"
        parts.append(
            f'<text class="axis" x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{escape(label)}</text>'
        )
    if buckets:
        n = len(buckets)
        for i, anchor in ((0, "start"), (n // 2, "middle"), (n - 1, "end")):
            x = LEFT + PLOT_W * (i + 0.5) / n
            label = buckets[i].astimezone(dt.UTC).strftime("%H:%M")
            parts.append(
                f'<text class="axis" x="{x:.1f}" y="{HEIGHT - 6}" text-anchor="{anchor}">{label}</text>'
            )
    return parts


def bar_chart(
    chart_id: str, title: str, buckets: Sequence[dt.datetime], stacks: Sequence[Series], unit: str = ""
) -> Markup:
    """Stacked bars, one per bucket; ``stacks`` from the bottom up, coloured ``series-0``, ``-1``..."""
    n = len(buckets)
    totals = [sum((s.values[i] or 0) for s in stacks) for i in range(n)]
    top = nice_max(max(totals, default=0))
    sums = ", ".join(f"{_number(sum(v or 0 for v in s.values))} {s.name}" for s in stacks)
    peak = max(totals, default=0)
    desc = f"{title}: {sums} in all; at most {_number(peak)} in one interval."
    parts = _frame(chart_id, title, desc, top, buckets, unit)
    slot = PLOT_W / max(n, 1)
    bar = max(slot * 0.8, 0.5)
    for i in range(n):
        base = 0.0
        for k, series in enumerate(stacks):
            value = series.values[i] or 0
            if value <= 0:
                continue
            height = PLOT_H * value / top
            y = TOP + PLOT_H - PLOT_H * base / top - height
            x = LEFT + i * slot + (slot - bar) / 2
            parts.append(
                f'<rect class="series-{k}" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{height:.1f}">'
                f"<title>{buckets[i].astimezone(dt.UTC):%H:%M} {escape(series.name)}: {_number(value)}</title></rect>"
            )
            base += value
    parts.append("</svg>")
    return Markup("".join(parts))


def line_chart(
    chart_id: str, title: str, buckets: Sequence[dt.datetime], lines: Sequence[Series], unit: str = ""
) -> Markup:
    """One line per series (``series-0``, ``-1``...); a bucket without a value breaks the line."""
    n = len(buckets)
    values = [v for s in lines for v in s.values if v is not None]
    top = nice_max(max(values, default=0))
    if values:
        peaks = "; ".join(
            f"{s.name} at most {_number(max((v for v in s.values if v is not None), default=0))}{(' ' + unit) if unit else ''}"
            for s in lines
        )
        desc = f"{title}: {peaks}."
    else:
        desc = f"{title}: nothing in this window."
    parts = _frame(chart_id, title, desc, top, buckets, unit)
    slot = PLOT_W / max(n, 1)
    for k, series in enumerate(lines):
        path: list[str] = []
        pen_down = False
        for i, value in enumerate(series.values):
            if value is None:
                pen_down = False
                continue
            x = LEFT + slot * (i + 0.5)
            y = TOP + PLOT_H * (1 - value / top)
            path.append(f"{'L' if pen_down else 'M'}{x:.1f} {y:.1f}")
            pen_down = True
        if path:
            parts.append(f'<path class="line series-{k}" d="{" ".join(path)}" fill="none"/>')
            # A lone point (no neighbour to draw a line to) still shows.
            for i, value in enumerate(series.values):
                alone = (
                    value is not None
                    and (i == 0 or series.values[i - 1] is None)
                    and (i == n - 1 or series.values[i + 1] is None)
                )
                if alone and value is not None:
                    x, y = LEFT + slot * (i + 0.5), TOP + PLOT_H * (1 - value / top)
                    parts.append(f'<circle class="dot series-{k}" cx="{x:.1f}" cy="{y:.1f}" r="2.5"/>')
    parts.append("</svg>")
    return Markup("".join(parts))

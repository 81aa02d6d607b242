"""Server-rendered SVG charts (no JavaScript library, nothing fetched at run time).

Each chart is a standalone ``<svg>`` with a ``<title>``/``<desc>`` (read by screen
readers), a legend, axis labels and a ``viewBox`` so it scales to its container.
Missing values (``None``) break a line instead of being drawn as 0.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from html import escape

#: Colour-blind-safe palette (Okabe–Ito).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000")

DEFAULT_W, H = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 16, 44


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return float(step * exp)
    return float(10 * exp)


def _fmt(value: float, percent: bool) -> str:
    if percent:
        return f"{value * 100:.0f}%" if value >= 0.1 or value == 0 else f"{value * 100:.1f}%"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:g}" if value >= 1 or value == 0 else f"{value:.2f}"


def line_chart(
    series: Mapping[str, Sequence[float | None]],
    labels: Sequence[str],
    *,
    title: str,
    y_label: str = "",
    percent: bool = False,
    empty: str = "no data yet",
    width: int = DEFAULT_W,
) -> str:
    """Lines over shared x ``labels`` (a few of them printed under the axis).

    ``width``: the drawing's width in px — the container's, so text keeps its size.
    """
    W = max(240, min(int(width), 2000))
    n = len(labels)
    values = [v for ys in series.values() for v in ys if v is not None]
    top = _nice_max(max(values, default=0.0))
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    uid = f"c{zlib.crc32(title.encode()):08x}"  # ids unique per chart on one page

    def x(i: int) -> float:
        return LEFT + (pw * i / (n - 1) if n > 1 else pw / 2)

    def y(v: float) -> float:
        return TOP + ph * (1 - v / top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" role="img" '
        f'class="chart" aria-labelledby="{uid}t {uid}d" preserveAspectRatio="xMidYMid meet">',
        f'<title id="{uid}t">{escape(title)}</title>',
        f'<desc id="{uid}d">{escape(_describe(series, labels, percent))}</desc>',
    ]
    for k in range(5):  # grid and y ticks
        v = top * k / 4
        parts.append(
            f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            'stroke="#ddd" stroke-width="1"/>'
            f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#444">{_fmt(v, percent)}</text>'
        )
    if y_label:
        parts.append(
            f'<text x="12" y="{TOP + ph / 2:.0f}" font-size="11" fill="#444" '
            f'transform="rotate(-90 12 {TOP + ph / 2:.0f})" text-anchor="middle">'
            f"{escape(y_label)}</text>"
        )
    step = max(1, math.ceil(n / max(2, (W - LEFT - RIGHT) // 70)))  # ~70 px per label
    for i in range(0, n, step):
        parts.append(
            f'<text x="{x(i):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle" font-size="11" '
            f'fill="#444">{escape(labels[i])}</text>'
        )
    if not values:
        parts.append(
            f'<text x="{LEFT + pw / 2:.0f}" y="{TOP + ph / 2:.0f}" text-anchor="middle" '
            f'font-size="14" fill="#666">{escape(empty)}</text>'
        )
    for s, (name, ys) in enumerate(series.items()):
        color = PALETTE[s % len(PALETTE)]
        runs: list[list[str]] = [[]]
        for i, val in enumerate(ys):
            if val is None:
                runs.append([])
            else:
                runs[-1].append(f"{x(i):.1f},{y(val):.1f}")
        for run in runs:
            if len(run) == 1:
                cx, cy = run[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{color}"/>')
            elif run:
                parts.append(
                    f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                    f'points="{" ".join(run)}"><title>{escape(name)}</title></polyline>'
                )
    lx = LEFT
    for s, name in enumerate(series):  # legend under the x labels
        color = PALETTE[s % len(PALETTE)]
        parts.append(
            f'<rect x="{lx}" y="{H - 14}" width="10" height="10" fill="{color}"/>'
            f'<text x="{lx + 14}" y="{H - 5}" font-size="11" fill="#222">{escape(name)}</text>'
        )
        lx += 22 + 7 * len(name)
        if lx > W - 60:  # no room for more: the <desc> still names every series
            break
    parts.append("</svg>")
    return "".join(parts)


def _describe(
    series: Mapping[str, Sequence[float | None]], labels: Sequence[str], percent: bool
) -> str:
    if not labels:
        return "no data"
    bits = []
    for name, ys in series.items():
        vals = [v for v in ys if v is not None]
        if vals:
            bits.append(f"{name}: latest {_fmt(vals[-1], percent)}, max {_fmt(max(vals), percent)}")
    span = f"from {labels[0]} to {labels[-1]}"
    return f"{span}; " + ("; ".join(bits) if bits else "no data")

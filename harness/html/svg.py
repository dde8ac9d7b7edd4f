"""Bar charts as inline SVG (no JavaScript, no fonts or images to fetch): a bar per row with
its mean, a whisker for ± one standard deviation, and the value at the bar's end."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 360
LABEL_CHARS = 48  # longer labels are cut (the full label is in the tooltip)
LABEL_H = 18
BAR_H = 16
ROW_GAP = 12
PAD = 8


@dataclass(slots=True)
class Bar:
    label: str
    value: float
    stdev: float = 0.0
    colour: str = "#0072B2"
    note: str = ""  # shown after the value (e.g. "was 812")
    marker: float | None = None  # a tick at this value (e.g. the old run's mean)


def nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exp: float = 10.0 ** math.floor(math.log10(value))
    for step in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if step * exp >= value:
            return step * exp
    return 10 * exp


def fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _ink(colour: str) -> str:
    """Black or white text, whichever reads better on COLOUR (#rrggbb)."""
    try:
        r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    except ValueError:
        return "#fff"
    return "#000" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "#fff"


def _scale_top(bars: Sequence[Bar]) -> tuple[float, float | None]:
    """The axis maximum, and the value above which bars are cut (one outlier, such as the raw
    path without a tunnel, would otherwise flatten every other bar)."""
    tops = sorted((max(b.value + b.stdev, b.marker or 0.0) for b in bars), reverse=True)
    if not tops:
        return 1.0, None
    if len(tops) > 2 and tops[1] > 0 and tops[0] > 2.5 * tops[1]:
        return nice_max(tops[1] * 1.15), nice_max(tops[1] * 1.15)
    return nice_max(tops[0]), None


def bar_chart(bars: Sequence[Bar], unit: str, title: str, *, chart_id: str = "") -> str:
    """A horizontal bar chart: each row is a label line, then the bar with its whisker."""
    scale_max, cut = _scale_top(bars)
    plot_w = WIDTH - 2 * PAD
    row_h = LABEL_H + BAR_H + ROW_GAP
    axis_y = PAD + len(bars) * row_h
    height = axis_y + 30
    ident = f' id="{escape(chart_id)}"' if chart_id else ""
    parts = [
        f'<svg class="chart"{ident} role="img" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" xmlns="http://www.w3.org/2000/svg" '
        f'aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for tick in range(5):
        value = scale_max * tick / 4
        x = PAD + plot_w * tick / 4
        parts.append(f'<line class="grid" x1="{x:.1f}" y1="{PAD}" x2="{x:.1f}" '
                     f'y2="{axis_y}"/>')
        anchor = "start" if tick == 0 else "end" if tick == 4 else "middle"
        parts.append(f'<text class="tick" x="{x:.1f}" y="{axis_y + 16}" '
                     f'text-anchor="{anchor}">{escape(fmt(value))}</text>')
    parts.append(f'<text class="tick" x="{WIDTH - PAD}" y="{axis_y + 29}" '
                 f'text-anchor="end">{escape(unit)}</text>')
    for i, bar in enumerate(bars):
        y = PAD + i * row_h
        bar_y = y + LABEL_H
        clipped = cut is not None and bar.value + bar.stdev > cut
        w = plot_w * min(max(bar.value, 0.0), scale_max) / scale_max
        value_text = fmt(bar.value) + (f" ± {fmt(bar.stdev)}" if bar.stdev else "")
        tip = f"{bar.label}: {value_text} {unit}" + (f" ({bar.note})" if bar.note else "")
        parts.append(f'<g class="bar"><title>{escape(tip)}</title>')
        label = bar.label if len(bar.label) <= LABEL_CHARS else bar.label[:LABEL_CHARS - 1] + "…"
        parts.append(f'<text class="label" x="{PAD}" y="{y + 13}">{escape(label)}</text>')
        parts.append(f'<rect x="{PAD}" y="{bar_y}" width="{w:.1f}" height="{BAR_H}" rx="2" '
                     f'fill="{escape(bar.colour)}"/>')
        if clipped:  # a break in the bar: it goes on far beyond the axis
            bx = PAD + plot_w - 14
            parts.append(f'<path class="break" d="M{bx} {bar_y - 2}l6 {BAR_H + 4}M{bx + 5} '
                         f'{bar_y - 2}l6 {BAR_H + 4}"/>')
        elif bar.stdev > 0:
            lo = PAD + plot_w * max(bar.value - bar.stdev, 0.0) / scale_max
            hi = PAD + plot_w * (bar.value + bar.stdev) / scale_max
            mid = bar_y + BAR_H / 2
            parts.append(f'<path class="whisker" d="M{lo:.1f} {mid}H{hi:.1f}M{lo:.1f} '
                         f'{mid - 5}V{mid + 5}M{hi:.1f} {mid - 5}V{mid + 5}"/>')
        if bar.marker is not None:
            mx = PAD + plot_w * bar.marker / scale_max
            parts.append(f'<path class="marker" d="M{mx:.1f} {bar_y - 3}V{bar_y + BAR_H + 3}"/>')
        text = value_text + (f"  {bar.note}" if bar.note else "")
        end = PAD + plot_w * min(bar.value + bar.stdev, scale_max) / scale_max
        inside = clipped or end + 8 + 7 * len(text) > WIDTH
        if inside:
            tx = PAD + w - (22 if clipped else 6)
            if not clipped and bar.stdev > 0:  # keep clear of the whisker
                tx = min(tx, PAD + plot_w * max(bar.value - bar.stdev, 0.0) / scale_max - 4)
            parts.append(f'<text class="value inside" x="{tx:.1f}" y="{bar_y + 12.5}" '
                         f'text-anchor="end" style="fill:{_ink(bar.colour)}">{escape(text)}'
                         "</text></g>")
        else:
            parts.append(f'<text class="value" x="{end + 6:.1f}" y="{bar_y + 12.5}">'
                         f"{escape(text)}</text></g>")
    parts.append("</svg>")
    return "".join(parts)

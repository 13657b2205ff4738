"""Charts drawn by the hub as SVG inside the page: no script, no font and no library to load,
so a page shows its charts offline, at once, and prints. Hovering a point or bar shows its
value (an SVG ``<title>``). Values are plain numbers; ``fmt`` says how to label them.

Why not a chart library: a line, a bar ranking and a grid are what the reports need; drawn
here they cost a few hundred bytes each and keep the console free of megabytes of vendored
script. A chart with interaction beyond hover would be the point to change that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

from markupsafe import Markup

PALETTE = ("#c23531", "#2f4554", "#61a0a8", "#d48265", "#91c7ae", "#749f83")
Fmt = Callable[[float], str]


def _plain(v: float) -> str:
    return f"{v:,.0f}"


def _nice_top(top: float) -> float:
    """A round number at or above ``top`` for the axis (1, 2, 5 × 10^n)."""
    if top <= 0:
        return 1.0
    step = 10 ** (len(str(int(top))) - 1)
    for m in (1, 2, 5, 10):
        if m * step >= top:
            return float(m * step)
    return float(10 * step)


def line(x_labels: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]], *,
         fmt: Fmt = _plain, width: int = 720, height: int = 240, label: str = "") -> Markup:
    """Lines over ``x_labels``: one per (name, values); a None value breaks its line."""
    left, right, top, bottom = 64, 12, 12, 40
    w, h = width - left - right, height - top - bottom
    values = [v for _, vs in series for v in vs if v is not None]
    high = _nice_top(max(values, default=0.0))
    low = min(0.0, min(values, default=0.0))
    n = max(1, len(x_labels) - 1)

    def x(i: int) -> float:
        return left + w * i / n

    def y(v: float) -> float:
        return top + h * (1 - (v - low) / ((high - low) or 1))

    out = [f'<svg class="chart" role="img" aria-label="{escape(label)}" viewBox="0 0 {width}'
           f' {height}" width="100%" xmlns="http://www.w3.org/2000/svg">']
    for k in range(5):  # grid lines and the value axis
        v = low + (high - low) * k / 4
        out.append(f'<line x1="{left}" x2="{left + w}" y1="{y(v):.1f}" y2="{y(v):.1f}"'
                   ' stroke="#e5e5e5"/>')
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end"'
                   f' font-size="11" fill="#666">{escape(fmt(v))}</text>')
    every = max(1, len(x_labels) // 12)
    for i, lab in enumerate(x_labels):
        if i % every == 0 or i == len(x_labels) - 1:
            out.append(f'<text x="{x(i):.1f}" y="{top + h + 16}" text-anchor="middle"'
                       f' font-size="11" fill="#666">{escape(lab)}</text>')
    for k, (name, vs) in enumerate(series):
        color = PALETTE[k % len(PALETTE)]
        path, pen = [], "M"
        for i, point in enumerate(vs):
            if point is None:
                pen = "M"
                continue
            path.append(f"{pen}{x(i):.1f},{y(point):.1f}")
            pen = "L"
            out.append(f'<circle cx="{x(i):.1f}" cy="{y(point):.1f}" r="2.5" fill="{color}">'
                       f'<title>{escape(name)} {escape(x_labels[i])}: {escape(fmt(point))}'
                       '</title></circle>')
        if path:
            out.append(f'<path d="{" ".join(path)}" fill="none" stroke="{color}"'
                       f' stroke-width="2"/>')
        out.append(f'<rect x="{left + 8 + k * 150}" y="{height - 14}" width="10" height="10"'
                   f' fill="{color}"/><text x="{left + 22 + k * 150}" y="{height - 5}"'
                   f' font-size="12">{escape(name)}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def bars(items: Sequence[tuple[str, float]], *, fmt: Fmt = _plain, width: int = 720,
         label: str = "") -> Markup:
    """A horizontal bar per (label, value), in the order given (a ranking)."""
    left, bar, gap = 160, 16, 6
    height = max(1, len(items)) * (bar + gap) + 8
    high = max((v for _, v in items), default=0.0) or 1.0
    w = width - left - 90
    out = [f'<svg class="chart" role="img" aria-label="{escape(label)}" viewBox="0 0 {width}'
           f' {height}" width="100%" xmlns="http://www.w3.org/2000/svg">']
    for i, (name, v) in enumerate(items):
        yy = 4 + i * (bar + gap)
        length = max(0.0, w * v / high)
        out.append(f'<text x="{left - 6}" y="{yy + 12}" text-anchor="end" font-size="12">'
                   f'{escape(name[:18])}</text>'
                   f'<rect x="{left}" y="{yy}" width="{length:.1f}" height="{bar}"'
                   f' fill="{PALETTE[0]}"><title>{escape(name)}: {escape(fmt(v))}</title></rect>'
                   f'<text x="{left + length + 4:.1f}" y="{yy + 12}" font-size="11"'
                   f' fill="#444">{escape(fmt(v))}</text>')
    out.append("</svg>")
    return Markup("".join(out))

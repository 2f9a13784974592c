"""Line charts as inline SVG, drawn from a run's metrics: no matplotlib, no images, sharp in print.

Colours come from CSS variables (--fg, --muted, --c0..--c3) so the charts follow the light/dark theme.
"""

from __future__ import annotations

import html
import math

W, H = 640, 260                   # viewBox size
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 14, 40


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round numbers (1, 2, 5 x 10^k steps) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e4 or a < 1e-3:
        return f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-")
    return f"{v:g}" if a >= 1 else f"{v:.3g}"


def line_chart(series: list[tuple[str, list[tuple[float, float]]]], title: str, xlabel: str = "step",
               ylabel: str = "") -> str:
    """series: [(name, [(x, y), ...]), ...] -> an <svg> element. Non-finite points are dropped. `title` names the
    chart for screen readers; the caller captions it (a <figcaption>)."""
    series = [(n, [(x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y)]) for n, pts in series]
    series = [(n, pts) for n, pts in series if pts]
    if not series:
        return ""
    xs = [x for _, pts in series for x, _ in pts]
    ys = [y for _, pts in series for _, y in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    pad = (y1 - y0) * 0.05 or abs(y0) * 0.05 or 1.0
    y0, y1 = y0 - pad, y1 + pad
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return TOP + (1 - (y - y0) / (y1 - y0)) * ph

    # The title is the chart's accessible name only: the figure around it shows it as its caption (drawn here too,
    # it printed twice, once in the SVG and once in the <figcaption>).
    out = [f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{html.escape(title)}" '
           f'xmlns="http://www.w3.org/2000/svg">']
    for t in nice_ticks(y0, y1):
        y = sy(t)
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                   f'<text x="{LEFT - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{_fmt(t)}</text>')
    for t in nice_ticks(x0, x1, 6):
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP + ph}" y2="{TOP + ph + 4}" class="axis"/>'
                   f'<text x="{x:.1f}" y="{TOP + ph + 17}" class="tick" text-anchor="middle">{_fmt(t)}</text>')
    out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{TOP + ph}" y2="{TOP + ph}" class="axis"/>')
    out.append(f'<text x="{LEFT + pw / 2}" y="{H - 6}" class="tick" text-anchor="middle">{html.escape(xlabel)}</text>')
    if ylabel:
        out.append(f'<text transform="translate(12 {TOP + ph / 2}) rotate(-90)" class="tick" '
                   f'text-anchor="middle">{html.escape(ylabel)}</text>')
    for i, (name, pts) in enumerate(series):
        cls = f"s{i % 4}"
        if len(pts) == 1:
            x, y = pts[0]
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" class="{cls} dot"/>')
        else:
            d = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
            out.append(f'<polyline points="{d}" class="{cls}"/>')
        lx = W - RIGHT - 150
        ly = TOP + 6 + 16 * i
        out.append(f'<line x1="{lx}" x2="{lx + 18}" y1="{ly}" y2="{ly}" class="{cls}"/>'
                   f'<text x="{lx + 24}" y="{ly + 4}" class="tick">{html.escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)

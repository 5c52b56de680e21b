"""A campaign's per-hour series drawn: text bars for the terminal, an SVG for a page.

The series is `CampaignBook.hourly`: one entry per hour of the operator's clock with
`sent`, `delivered`, `failed` (expired included). Hand-written SVG (grouped bars, an
axis, a legend): a few dozen elements, no drawing library to keep.
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

SERIES = (("sent", "#4c78a8"), ("delivered", "#54a24b"), ("failed", "#e45756"))


def text_chart(series: list[dict[str, Any]], width: int = 40) -> str:
    """Per hour, one bar per series, scaled to the largest count:

    ```
    2025-06-02 10h  sent      ████████████████████ 1,200
                    delivered ███████████████████▌ 1,180
    ```
    """
    if not series:
        return "(nothing sent yet)"
    top = max(max(entry.get(name, 0) for name, _c in SERIES) for entry in series) or 1
    lines = []
    for entry in series:
        label = f"{entry['hour'][:10]} {entry['hour'][11:13]}h"
        for index, (name, _colour) in enumerate(SERIES):
            count = int(entry.get(name, 0))
            eighths = round(count / top * width * 8)
            bar = "█" * (eighths // 8) + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[eighths % 8]
            lines.append(f"{label if index == 0 else ' ' * len(label)}  {name:<9} {bar} {count:,}")
    return "\n".join(lines)


def svg_chart(series: list[dict[str, Any]], title: str) -> str:
    """Grouped bars (sent, delivered, failed) per hour, with the counts' axis and a legend."""
    hours = max(1, len(series))
    group, bar = 3 * 14 + 10, 14
    left, top, plot_h = 60, 40, 220
    width = left + hours * group + 20
    height = top + plot_h + 70
    peak = max([max(e.get(n, 0) for n, _c in SERIES) for e in series] or [0]) or 1
    step = _nice_step(peak)
    axis_top = step * -(-peak // step)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{max(width, 360)}" height="{height}" '
        f'viewBox="0 0 {max(width, 360)} {height}" font-family="sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{left}" y="20" font-size="14" font-weight="bold">{escape(title)}</text>',
    ]
    for tick in range(0, axis_top + 1, step):
        y = top + plot_h - tick / axis_top * plot_h
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + hours * group}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:,}</text>')
    for index, entry in enumerate(series):
        x0 = left + index * group + 5
        for offset, (name, colour) in enumerate(SERIES):
            count = int(entry.get(name, 0))
            h = count / axis_top * plot_h
            parts.append(
                f'<rect class="{name}" x="{x0 + offset * bar}" y="{top + plot_h - h:.1f}" width="{bar - 2}" height="{h:.1f}" '
                f'fill="{colour}"><title>{escape(entry["hour"])} {name}: {count:,}</title></rect>'
            )
        parts.append(f'<text x="{x0 + 1.5 * bar}" y="{top + plot_h + 14}" text-anchor="middle">{entry["hour"][11:13]}h</text>')
        if index == 0 or entry["hour"][11:13] == "00":
            parts.append(f'<text x="{x0 + 1.5 * bar}" y="{top + plot_h + 28}" text-anchor="middle" fill="#666">{entry["hour"][5:10]}</text>')
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + hours * group}" y2="{top + plot_h}" stroke="#333"/>')
    for offset, (name, colour) in enumerate(SERIES):
        x = left + offset * 100
        parts.append(f'<rect x="{x}" y="{height - 22}" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{x + 16}" y="{height - 12}">{name}</text>')
    if not series:
        parts.append(f'<text x="{left + 10}" y="{top + plot_h / 2}">nothing sent yet</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _nice_step(peak: int) -> int:
    """A round tick step giving about five ticks up to `peak` (1, 2, 5 times a power of ten)."""
    magnitude = 1
    while True:
        for factor in (1, 2, 5):
            if peak / (factor * magnitude) <= 5:
                return factor * magnitude
        magnitude *= 10

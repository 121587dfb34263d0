"""Small bar charts as inline SVG, drawn on the server.

Written by hand: two dozen rectangles and a few labels are less code than any dependency, and
the charting libraries either draw in the browser with JavaScript or bring a plotting stack
(matplotlib) for a picture this small. The SVG is inlined in the page: no script, no request.

Every text goes through `escape()`, which also makes it valid XML (`&amp;`, `&lt;`, `&quot;`,
`&#x27;`), so a label can never close an element or open one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from html import escape

from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 340, 140
LEFT, RIGHT, TOP, BOTTOM = 44, 16, 10, 22  # room for the axis labels
BAR_COLOUR = "#417690"  # the admin's --secondary
TEXT_COLOUR = "#666"  # the admin's --body-quiet-color
GRID_COLOUR = "#ccc"


def nice_ceiling(value: float) -> int:
    """The axis top: the smallest 1, 2 or 5 times a power of ten that is at least `value`."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return int(step * power)
    return int(10 * power)  # unreachable: 10 * power > value by the choice of power


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def bar_chart(
    values: Sequence[float],
    labels: Sequence[str],
    *,
    title: str,
    unit: str,
    tick_labels: Sequence[str] | None = None,
    colour: str = BAR_COLOUR,
) -> SafeString:
    """Bars of `values`; `labels[i]` names bar i in its tooltip, `tick_labels[i]` (if not empty)
    is written under it. The whole chart is one `role="img"` with a summary as its label."""
    if len(values) != len(labels) or not values:
        raise ValueError("one label per value, and at least one value")
    ticks = list(tick_labels) if tick_labels is not None else list(labels)
    top = nice_ceiling(max(values))
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM
    baseline = TOP + plot_height
    slot = plot_width / len(values)
    bar_width = max(slot * 0.75, 1)
    peak = max(range(len(values)), key=lambda i: values[i])
    summary = (
        f"{title}: {_number(sum(values))} {unit} in total, "
        f"at most {_number(values[peak])} ({labels[peak]})"
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="gp-chart" viewBox="0 0 {WIDTH} {HEIGHT}"'
        f' width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(summary)}">',
        f"<title>{escape(summary)}</title>",
    ]
    for fraction in (0, 0.5, 1):  # grid lines and their values on the left
        y = baseline - fraction * plot_height
        parts.append(
            f'<line class="gp-chart-grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}"'
            f' y2="{y:.1f}" stroke="{GRID_COLOUR}" stroke-width="1"/>'
        )
        parts.append(
            f'<text class="gp-chart-label" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end"'
            f' font-size="11" fill="{TEXT_COLOUR}">{escape(_number(top * fraction))}</text>'
        )
    for i, (value, label) in enumerate(zip(values, labels, strict=True)):
        height = value / top * plot_height
        x = LEFT + i * slot + (slot - bar_width) / 2
        parts.append(
            f'<rect class="gp-chart-bar" x="{x:.1f}" y="{baseline - height:.1f}"'
            f' width="{bar_width:.1f}" height="{height:.1f}" fill="{escape(colour)}">'
            f"<title>{escape(label)}: {escape(_number(value))} {escape(unit)}</title></rect>"
        )
        if ticks[i]:
            parts.append(
                f'<text class="gp-chart-label" x="{x + bar_width / 2:.1f}" y="{HEIGHT - 6}"'
                f' text-anchor="middle" font-size="11" fill="{TEXT_COLOUR}">'
                f"{escape(ticks[i])}</text>"
            )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 (every text above is escaped)


def hourly_bar_chart(
    hours: Sequence[datetime], values: Sequence[float], *, title: str, unit: str
) -> SafeString:
    """One bar per hour, labelled in the portal's time zone; a tick every six hours."""
    local = [timezone.localtime(hour) for hour in hours]
    labels = [
        f"{start:%H:%M}\N{EN DASH}{start + timedelta(hours=1):%H:%M} {start:%Z}".strip()
        for start in local
    ]
    last = len(local) - 1
    ticks = [f"{start:%H:%M}" if (last - i) % 6 == 0 else "" for i, start in enumerate(local)]
    return bar_chart(values, labels, title=title, unit=unit, tick_labels=ticks)

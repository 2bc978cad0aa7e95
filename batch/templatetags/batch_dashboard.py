"""Template helpers of the job dashboard: durations, times in the viewer's locale, the throughput chart (SVG)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django import template
from django.utils.html import conditional_escape, format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from batch import dashboard
from batch.dashboard import MinuteThroughput
from jobsite import display

register = template.Library()

# In the SVG's own units (its labels are 15 units high, dashboard.css): the left margin holds a peak like 1,000,000.
CHART_WIDTH, CHART_HEIGHT, CHART_LEFT, CHART_BOTTOM = 600, 130, 76, 22


@register.filter
def duration(seconds: float | None) -> str:
    return display.short_duration(seconds)


@register.filter
def eta(job) -> str:
    return dashboard.eta(job)


@register.filter
def moment(value: datetime | None) -> SafeString | str:
    return display.moment(value)


@register.filter
def percent(fraction: float | None) -> int:
    return round((fraction or 0) * 100)


@register.filter
def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


@register.filter
def lookup(mapping, key):
    return mapping.get(key, 0)


@register.simple_tag
def throughput_chart(minutes: Sequence[MinuteThroughput], field: str, label: str) -> SafeString:
    """Bars per minute, oldest left, with the peak on the y axis and minutes-ago ticks on the x axis."""
    values = [getattr(minute, field) for minute in minutes]
    peak = max(values, default=0)
    plot_width = CHART_WIDTH - CHART_LEFT
    plot_height = CHART_HEIGHT - CHART_BOTTOM
    slot = plot_width / max(len(values), 1)
    # Numbers, times and the escaped label only: the bars are joined without escaping each (a view every 3 s).
    shown_label = conditional_escape(label)
    bars = mark_safe(
        "".join(
            f'<rect x="{CHART_LEFT + index * slot + 1:.1f}" y="{plot_height - height:.1f}" width="{max(slot - 2, 1):.1f}" '
            f'height="{height:.1f}"><title>{minute.minute:%H:%M} UTC: {value:,} {shown_label}</title></rect>'
            for index, (minute, value) in enumerate(zip(minutes, values))
            for height in [value / peak * plot_height if peak else 0]
        )
    )
    last = len(values) - 1
    ticks = format_html_join(
        "",
        '<text x="{}" y="{}" text-anchor="{}">{}</text>',
        (
            (
                f"{CHART_LEFT + index * slot + slot / 2:.1f}" if index < last else str(CHART_WIDTH),
                CHART_HEIGHT - 4,
                "middle" if index < last else "end",
                f"-{last - index} min" if index < last else "now",
            )
            for index in range(len(values))
            if (last - index) % 15 == 0
        ),
    )
    return format_html(
        '<svg class="throughput" viewBox="0 0 {} {}" role="img" aria-label="{} per minute, last hour, peak {}">'
        '<line x1="{}" y1="0" x2="{}" y2="{}" class="axis"/><line x1="{}" y1="{}" x2="{}" y2="{}" class="axis"/>'
        '<text x="{}" y="13" text-anchor="end">{}</text><text x="{}" y="{}" text-anchor="end">0</text>'
        '<g class="bars">{}</g><g class="ticks">{}</g></svg>',
        CHART_WIDTH,
        CHART_HEIGHT,
        label,
        f"{peak:,}",
        CHART_LEFT,
        CHART_LEFT,
        plot_height,
        CHART_LEFT,
        plot_height,
        CHART_WIDTH,
        plot_height,
        CHART_LEFT - 4,
        f"{peak:,}",
        CHART_LEFT - 4,
        plot_height,
        bars,
        ticks,
    )

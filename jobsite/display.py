"""How the admin pages of every app show times and durations to people (the dashboard's conventions)."""

from __future__ import annotations

from datetime import datetime

from django.utils.html import format_html
from django.utils.safestring import SafeString


def short_duration(seconds: float | None) -> str:
    """`3 min 19 s`, `2 h 5 min`, `4 s`, `0.4 s`, `< 0.1 s`: elapsed times and ETAs; `-` when unknown."""
    if seconds is None:
        return "-"
    if 0 < seconds < 0.05:  # would read "0.0 s", as if it had taken no time
        return "< 0.1 s"
    if seconds < 10:
        return f"{seconds:.1f} s" if seconds % 1 else f"{seconds:.0f} s"
    whole = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        amount, whole = divmod(whole, size)
        if amount:
            parts.append(f"{amount} {unit}")
    return " ".join(parts[:2])


def moment(value: datetime | None) -> SafeString | str:
    """A `<time>` holding the UTC time to the second; dashboard/dashboard.js shows it in the viewer's locale."""
    if value is None:
        return "-"
    return format_html('<time datetime="{}">{}</time>', value.isoformat(), f"{value:%Y-%m-%d %H:%M:%S} UTC")

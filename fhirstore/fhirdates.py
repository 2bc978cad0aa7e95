"""FHIR date, dateTime and instant values as ranges of instants.

A FHIR date is as precise as it is written: `2020` covers the whole year, `2020-03-01` the whole day. Both
indexing and searching turn a value into the range `[low, high]` it covers, which makes the search
prefixes (`ge`, `lt`, …) plain comparisons.
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime, timedelta, timezone
from functools import lru_cache

LOWEST = datetime(1, 1, 1, tzinfo=timezone.utc)  # stands for "no lower bound" (e.g. a Period without start)
HIGHEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)  # "no upper bound"
ONE_MICROSECOND = timedelta(microseconds=1)  # PostgreSQL's timestamp resolution
# Values parsed lately, remembered: a bulk load indexes the same few dates over and over (an encounter's
# time is its observations' too: half the values of a Synthea load repeat within the last thousand).
PARSED_DATES_MEMO = 4096

DATE_PATTERN = re.compile(
    r"^(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?P<fraction>\.\d+)?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def parse_date_range(text: str) -> tuple[datetime, datetime] | None:
    """The instants a FHIR date/dateTime/instant covers, or None when `text` is not one.

    A time without a zone is taken as UTC (the spec leaves it to the server).
    """
    return _parse_date_text(text) if isinstance(text, str) else None


@lru_cache(maxsize=PARSED_DATES_MEMO)
def _parse_date_text(text: str) -> tuple[datetime, datetime] | None:
    match = DATE_PATTERN.match(text)
    if match is None:
        return None
    parts = match.groupdict()
    try:
        zone = _zone(parts["zone"])
        year = int(parts["year"])
        month, day = int(parts["month"] or 1), int(parts["day"] or 1)
        hour, minute, second = int(parts["hour"] or 0), int(parts["minute"] or 0), int(parts["second"] or 0)
        fraction = (parts["fraction"] or ".")[1:]
        low = datetime(year, month, day, hour, minute, second, int(fraction[:6].ljust(6, "0")), tzinfo=zone)
    except ValueError:  # e.g. month 13 or February 30
        return None
    try:
        if parts["month"] is None:
            end = _shift(low, year=year + 1)
        elif parts["day"] is None:
            end = low + timedelta(days=calendar.monthrange(year, month)[1])
        elif parts["hour"] is None:
            end = low + timedelta(days=1)
        elif parts["second"] is None:
            end = low + timedelta(minutes=1)
        elif not fraction:
            end = low + timedelta(seconds=1)
        else:
            end = low + timedelta(microseconds=10 ** max(0, 6 - len(fraction)))
        return _utc(low), (_utc(end) - ONE_MICROSECOND) if end is not None else HIGHEST
    except OverflowError:  # the last day of year 9999, or year 1 shifted out of range by its zone
        return None


def format_instant(moment: datetime) -> str:
    """`moment` as a FHIR instant, in UTC, to the microsecond the database keeps."""
    return moment.astimezone(timezone.utc).isoformat()


def _shift(moment: datetime, year: int) -> datetime | None:
    try:
        return moment.replace(year=year)
    except ValueError:  # past year 9999
        return None


@lru_cache(maxsize=64)  # the zones of the data: a handful
def _zone(text: str | None) -> timezone:
    if text is None or text == "Z":
        return timezone.utc
    sign = 1 if text[0] == "+" else -1
    hours, minutes = int(text[1:3]), int(text[4:6])
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc)

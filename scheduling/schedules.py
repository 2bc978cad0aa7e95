"""When a scheduled job fires: a cron expression or a fixed interval, turned into ticks.

A tick is a point on the schedule, never the moment a message arrived, so every beat and every worker
computes the same tick for the same occurrence; that tick is what makes an occurrence unique in Postgres.

Cron expressions come in two dialects:
- 5 fields, as in unix cron: `minute hour day-of-month month day-of-week`;
- 6 fields, seconds first, as in Spring's `@Scheduled(cron = "0 0 1 * * ?")` (and Quartz without the
  year): `second minute hour day-of-month month day-of-week`. `?` means "any" in the two day fields.
Day-of-week numbers follow Spring and unix (0 or 7 = Sunday); names (`MON-FRI`) are unambiguous.
When both day fields are restricted, a 5-field cron fires on either (unix), a 6-field one on both (Spring).

Daylight saving time, as vixie cron does it:
- a job whose hour field is `*` follows real time: an every-15-minutes job keeps firing every 15 minutes
  through both passes of the repeated hour, and nothing is due in the hour that is skipped;
- a job at fixed hours fires once per calendar occurrence: a 02:30 job fires once on the night the clocks go
  back (the first 02:30), and on the night they go forward it fires once, when the skipped hour ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from scheduling.exceptions import InvalidSchedule

FIELD_NAMES = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")
DAY_FIELDS = (3, 5)  # where Spring and Quartz accept `?`
ONE_MICROSECOND = timedelta(microseconds=1)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class CronSchedule:
    """A cron expression evaluated in a time zone (IANA name)."""

    expression: str
    timezone: str
    _seconds_first: str = field(init=False, repr=False, compare=False)
    _days_either: bool = field(init=False, repr=False, compare=False)
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    _fixed_hours: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fields = self.expression.split() if isinstance(self.expression, str) else None
        if fields is None or len(fields) not in (5, 6):
            count = "not a string" if fields is None else f"{len(fields)} fields"
            year = " (the year field of Quartz is not supported)" if fields and len(fields) == 7 else ""
            raise InvalidSchedule(
                f"cron {self.expression!r}: expected 5 fields (minute hour day-of-month month day-of-week) or "
                f"6 with seconds first (second minute hour day-of-month month day-of-week), got {count}{year}"
            )
        days_either = len(fields) == 5
        if days_either:
            fields = ["0", *fields]
        for position, value in enumerate(fields):
            if "?" in value and (position not in DAY_FIELDS or value != "?"):
                raise InvalidSchedule(
                    f"cron {self.expression!r}: '?' stands alone in the day-of-month or day-of-week field only, "
                    f"not in the {FIELD_NAMES[position]} field {value!r}"
                )
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise InvalidSchedule(
                f"unknown time zone {self.timezone!r} (use an IANA name like 'Europe/Berlin')"
            ) from None
        seconds_first = " ".join(fields)
        try:
            parsed = croniter(seconds_first, datetime.now(zone), second_at_beginning=True, day_or=days_either)
            parsed.get_next(datetime)
        except (CroniterError, ValueError, KeyError) as exc:
            raise InvalidSchedule(f"cron {self.expression!r}: {_explain(fields, exc)}") from None
        hours = parsed.expanded[1]  # croniter keeps the seconds last: minute, hour, day, month, weekday, second
        object.__setattr__(self, "_seconds_first", seconds_first)
        object.__setattr__(self, "_days_either", days_either)
        object.__setattr__(self, "_zone", zone)
        object.__setattr__(self, "_fixed_hours", not (hours == ["*"] or len(hours) == 24))

    def latest_tick_at_or_before(self, moment: datetime) -> datetime:
        iterator = self._iterator(moment + ONE_MICROSECOND)
        while True:
            tick = self._local(iterator.get_prev(datetime))
            if not self._is_second_pass_of_fixed_time(tick):
                return tick.astimezone(timezone.utc)

    def next_tick_after(self, moment: datetime) -> datetime:
        iterator = self._iterator(moment)
        while True:
            tick = self._local(iterator.get_next(datetime))
            if not self._is_second_pass_of_fixed_time(tick):
                return tick.astimezone(timezone.utc)

    def to_dict(self) -> dict[str, Any]:
        return {"cron": self.expression, "timezone": self.timezone}

    @property
    def fires_at_whole_minutes(self) -> bool:
        """True when the cron says nothing finer than a minute (what a django-celery-beat crontab can show)."""
        return self._seconds_first.split()[0] == "0"

    @property
    def minute_fields(self) -> list[str]:
        """minute hour day-of-month month day-of-week, with `?` as `*`."""
        return [value.replace("?", "*") for value in self._seconds_first.split()[1:]]

    def __str__(self) -> str:
        return f"cron {self.expression} ({self.timezone})"

    def _iterator(self, moment: datetime) -> croniter:
        return croniter(
            self._seconds_first,
            _aware(moment).astimezone(self._zone),
            second_at_beginning=True,
            day_or=self._days_either,
        )

    def _local(self, value: datetime) -> datetime:
        """The same instant with `fold` set right, so a repeated wall time says which pass it is."""
        return value.astimezone(timezone.utc).astimezone(self._zone)

    def _is_second_pass_of_fixed_time(self, tick: datetime) -> bool:
        return self._fixed_hours and tick.fold == 1 and tick.replace(fold=0).utcoffset() != tick.utcoffset()


@dataclass(frozen=True)
class EverySeconds:
    """Every N seconds, on multiples of N since the Unix epoch, so every process agrees on the ticks."""

    seconds: int

    def __post_init__(self) -> None:
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, int) or self.seconds < 1:
            raise InvalidSchedule(f"every_seconds must be a whole number of seconds, at least 1; got {self.seconds!r}")

    def latest_tick_at_or_before(self, moment: datetime) -> datetime:
        elapsed = _aware(moment) - EPOCH
        return EPOCH + timedelta(seconds=elapsed // timedelta(seconds=self.seconds) * self.seconds)

    def next_tick_after(self, moment: datetime) -> datetime:
        return self.latest_tick_at_or_before(moment) + timedelta(seconds=self.seconds)

    def to_dict(self) -> dict[str, Any]:
        return {"every_seconds": self.seconds}

    def __str__(self) -> str:
        return f"every {self.seconds} s"


Schedule = CronSchedule | EverySeconds


def make_schedule(cron: str | None, every_seconds: int | None, timezone_name: str) -> Schedule:
    """Exactly one of `cron` and `every_seconds`."""
    if (cron is None) == (every_seconds is None):
        raise InvalidSchedule("give exactly one of cron=... or every_seconds=...")
    if cron is not None:
        return CronSchedule(cron, timezone_name)
    return EverySeconds(every_seconds)


def schedule_from_dict(data: dict[str, Any]) -> Schedule:
    """The inverse of `to_dict`: how a schedule travels in a PeriodicTask row and a task message."""
    if "cron" in data:
        return CronSchedule(data["cron"], data["timezone"])
    if "every_seconds" in data:
        return EverySeconds(data["every_seconds"])
    raise InvalidSchedule(f"not a schedule: {data!r}")


def is_stale(schedule: Schedule, tick: datetime, now: datetime) -> bool:
    """A tick is stale once the next one has come: running it then would be a second catch-up run."""
    return schedule.next_tick_after(tick) <= now


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{moment!r} has no time zone")
    return moment


def _explain(fields: list[str], error: Exception) -> str:
    """Name the first field that is wrong on its own, or say why the whole expression never fires."""
    for position, value in enumerate(fields):
        alone = ["*"] * 6
        alone[position] = value
        try:
            croniter(" ".join(alone), second_at_beginning=True)
        except (CroniterError, ValueError, KeyError):
            return f"the {FIELD_NAMES[position]} field {value!r} is not valid"
    return f"it never fires ({error})"

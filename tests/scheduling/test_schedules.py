"""Ticks: what every process computes identically from a schedule, across daylight-saving changes too."""

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from scheduling.exceptions import InvalidSchedule
from scheduling.schedules import CronSchedule, EverySeconds, is_stale, make_schedule, schedule_from_dict

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def ticks_between(schedule, start: datetime, end: datetime) -> list[datetime]:
    ticks, moment = [], start
    while (moment := schedule.next_tick_after(moment)) <= end:
        ticks.append(moment)
    return ticks


def wall_clock(ticks: list[datetime], zone: ZoneInfo) -> list[str]:
    return [tick.astimezone(zone).strftime("%H:%M%z") for tick in ticks]


def test_spring_cron_with_seconds_fires_at_one_in_the_morning():
    nightly = CronSchedule("0 0 1 * * ?", "UTC")

    assert nightly.next_tick_after(datetime(2024, 5, 1, 0, 59, 59, tzinfo=UTC)) == datetime(2024, 5, 1, 1, tzinfo=UTC)
    assert nightly.next_tick_after(datetime(2024, 5, 1, 1, tzinfo=UTC)) == datetime(2024, 5, 2, 1, tzinfo=UTC)


def test_five_field_cron_fires_on_whole_minutes():
    every_five_minutes = CronSchedule("*/5 * * * *", "UTC")

    assert every_five_minutes.next_tick_after(datetime(2024, 5, 1, 10, 2, 30, tzinfo=UTC)) == datetime(
        2024, 5, 1, 10, 5, tzinfo=UTC
    )


def test_seconds_field_gives_sub_minute_ticks():
    every_two_seconds = CronSchedule("*/2 * * * * ?", "UTC")
    start = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)

    assert ticks_between(every_two_seconds, start, start + timedelta(seconds=6)) == [
        start + timedelta(seconds=s) for s in (2, 4, 6)
    ]


def test_latest_tick_includes_a_tick_exactly_now_and_ignores_microseconds():
    every_two_seconds = CronSchedule("*/2 * * * * ?", "UTC")
    tick = datetime(2024, 5, 1, 10, 0, 2, tzinfo=UTC)

    assert every_two_seconds.latest_tick_at_or_before(tick) == tick
    assert every_two_seconds.latest_tick_at_or_before(tick + timedelta(seconds=1, microseconds=999_999)) == tick
    assert every_two_seconds.latest_tick_at_or_before(tick - timedelta(microseconds=1)) == tick - timedelta(seconds=2)


def test_day_names_and_numbers_follow_spring_where_0_and_7_are_sunday():
    sunday = datetime(2024, 5, 5, 1, tzinfo=UTC)
    saturday_night = datetime(2024, 5, 4, 12, tzinfo=UTC)

    for expression in ("0 0 1 ? * SUN", "0 0 1 ? * 0", "0 0 1 ? * 7", "0 1 * * 0"):
        assert CronSchedule(expression, "UTC").next_tick_after(saturday_night) == sunday, expression


def test_six_field_cron_needs_both_day_fields_like_spring_five_field_either_like_unix():
    start = datetime(2024, 5, 1, 12, tzinfo=UTC)  # a Wednesday; Friday the 13th next comes in September

    assert CronSchedule("0 0 0 13 * FRI", "UTC").next_tick_after(start) == datetime(2024, 9, 13, tzinfo=UTC)
    assert CronSchedule("0 0 13 * FRI", "UTC").next_tick_after(start) == datetime(2024, 5, 3, tzinfo=UTC)


@pytest.mark.parametrize(
    "expression, reason",
    [
        ("* * * *", "expected 5 fields"),
        ("0 0 1 * * ? 2030", "the year field of Quartz is not supported"),
        ("61 * * * * ?", "the second field '61' is not valid"),
        ("0 0 25 * * ?", "the hour field '25' is not valid"),
        ("0 0 1 ? * FUNDAY", "the day-of-week field 'FUNDAY' is not valid"),
        ("0 ? * * * *", "'?' stands alone in the day-of-month or day-of-week field only"),
        ("0 0 0 30 2 ?", "it never fires"),
        (42, "not a string"),
    ],
)
def test_invalid_crons_are_refused_with_their_reason(expression, reason):
    with pytest.raises(InvalidSchedule, match=reason.replace("?", r"\?").replace("(", r"\(")):
        CronSchedule(expression, "UTC")


def test_unknown_time_zone_is_refused():
    with pytest.raises(InvalidSchedule, match="unknown time zone 'Mars/Olympus'"):
        CronSchedule("* * * * *", "Mars/Olympus")


@pytest.mark.parametrize("seconds", [0, -5, 1.5, True, "60"])
def test_interval_must_be_a_positive_whole_number_of_seconds(seconds):
    with pytest.raises(InvalidSchedule, match="every_seconds must be a whole number of seconds"):
        EverySeconds(seconds)


def test_exactly_one_of_cron_and_interval():
    with pytest.raises(InvalidSchedule, match="exactly one of"):
        make_schedule("* * * * *", 5, "UTC")
    with pytest.raises(InvalidSchedule, match="exactly one of"):
        make_schedule(None, None, "UTC")


def test_interval_ticks_are_aligned_to_the_epoch_so_every_process_agrees():
    every_seven = EverySeconds(7)
    moment = datetime(2024, 5, 1, 10, 0, 3, 250_000, tzinfo=UTC)

    latest = every_seven.latest_tick_at_or_before(moment)

    assert latest.timestamp() % 7 == 0
    assert latest <= moment < latest + timedelta(seconds=7)
    assert every_seven.next_tick_after(moment) == latest + timedelta(seconds=7)
    assert every_seven.latest_tick_at_or_before(latest) == latest


def test_schedules_travel_as_dicts():
    for schedule in (CronSchedule("0 0 1 * * ?", "Europe/Berlin"), EverySeconds(60)):
        assert schedule_from_dict(schedule.to_dict()) == schedule


def test_a_tick_is_stale_once_the_next_one_has_come():
    every_two = EverySeconds(2)
    tick = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)

    assert not is_stale(every_two, tick, tick + timedelta(seconds=1.9))
    assert is_stale(every_two, tick, tick + timedelta(seconds=2))


# --- Daylight saving time ---------------------------------------------------------------------------
# Berlin: clocks go back 2024-10-27 03:00 CEST -> 02:00 CET, and forward 2024-03-31 02:00 CET -> 03:00 CEST.
# New York: back 2024-11-03 02:00 EDT -> 01:00 EST, forward 2024-03-10 02:00 EST -> 03:00 EDT.


@pytest.mark.parametrize(
    "zone, night, fixed_time, expected",
    [
        (BERLIN, datetime(2024, 10, 26, 20), "0 30 2 * * ?", ["02:30+0200"]),
        (BERLIN, datetime(2024, 3, 30, 20), "0 30 2 * * ?", ["03:00+0200"]),
        (NEW_YORK, datetime(2024, 11, 2, 20), "0 30 1 * * ?", ["01:30-0400"]),
        (NEW_YORK, datetime(2024, 3, 9, 20), "30 2 * * *", ["03:00-0400"]),
    ],
)
def test_fixed_time_job_fires_once_on_the_night_the_clocks_change(zone, night, fixed_time, expected):
    """The repeated 02:30 fires on its first pass only; the skipped 02:30 fires once, when the gap ends."""
    schedule = CronSchedule(fixed_time, zone.key)
    start = night.replace(tzinfo=zone)

    assert wall_clock(ticks_between(schedule, start, start + timedelta(hours=12)), zone) == expected


def test_hourly_job_follows_real_time_through_the_repeated_hour():
    hourly = CronSchedule("0 0 * * * ?", "Europe/Berlin")
    start = datetime(2024, 10, 27, 0, 30, tzinfo=BERLIN)

    ticks = ticks_between(hourly, start, datetime(2024, 10, 27, 4, 0, tzinfo=BERLIN))

    assert wall_clock(ticks, BERLIN) == ["01:00+0200", "02:00+0200", "02:00+0100", "03:00+0100", "04:00+0100"]
    assert {later - earlier for earlier, later in zip(ticks, ticks[1:])} == {timedelta(hours=1)}


def test_hourly_job_has_nothing_due_in_the_skipped_hour():
    hourly = CronSchedule("0 0 * * * ?", "America/New_York")
    start = datetime(2024, 3, 10, 0, 30, tzinfo=NEW_YORK)

    ticks = ticks_between(hourly, start, datetime(2024, 3, 10, 4, 0, tzinfo=NEW_YORK))

    assert wall_clock(ticks, NEW_YORK) == ["01:00-0500", "03:00-0400", "04:00-0400"]
    assert {later - earlier for earlier, later in zip(ticks, ticks[1:])} == {timedelta(hours=1)}


def test_latest_tick_agrees_with_next_tick_across_the_change():
    """What beat sends (latest at or before now) must be a tick the forward walk also yields."""
    for expression in ("0 30 2 * * ?", "0 */20 * * * ?"):
        schedule = CronSchedule(expression, "Europe/Berlin")
        start = datetime(2024, 10, 26, 23, tzinfo=BERLIN)
        for tick in ticks_between(schedule, start, start + timedelta(hours=6)):
            assert schedule.latest_tick_at_or_before(tick + timedelta(seconds=30)) == tick

"""Beat fires clustered jobs on their exact ticks and stamps each message with the tick it is for."""

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from django_celery_beat.models import PeriodicTask
from kombu import Connection

from heavylift.celery import app
from scheduling import beat
from scheduling.beat import NodeAwareScheduler, TickSchedule
from scheduling.clock import DatabaseClock, database_clock, database_now
from scheduling.registry import JobRegistry, ScheduledJob
from scheduling.schedules import CronSchedule, EverySeconds
from scheduling.sync import REMOVED_FROM_CODE, sync_declared_jobs

T0 = datetime(2024, 5, 1, 10, 0, 0, tzinfo=timezone.utc)


def noop() -> None:
    pass


def declare(*jobs: tuple[str, object, bool]) -> None:
    sync_declared_jobs([ScheduledJob(name, noop, schedule, clustered, False) for name, schedule, clustered in jobs])


def test_a_tick_schedule_is_due_once_a_tick_passed_since_the_last_send():
    now = T0 + timedelta(seconds=0.5)
    every_two = TickSchedule(EverySeconds(2), app=app)
    every_two.nowfun = lambda: now

    assert every_two.is_due(T0 - timedelta(seconds=0.1)) == (True, 1.5)
    assert every_two.is_due(T0 + timedelta(seconds=0.01)) == (False, 1.5)


def test_after_an_hour_down_beat_sends_the_latest_missed_tick_once_not_the_backlog():
    now = T0 + timedelta(seconds=0.5)
    every_two = TickSchedule(EverySeconds(2), app=app)
    every_two.nowfun = lambda: now

    assert every_two.is_due(T0 - timedelta(hours=1)).is_due
    assert every_two.latest_tick() == T0
    assert not every_two.is_due(now).is_due  # what beat remembers once it has sent it


@pytest.mark.django_db(transaction=True)  # django-celery-beat commits and closes connections itself
def test_beat_schedules_clustered_jobs_on_their_own_ticks_and_leaves_local_jobs_to_the_workers():
    hour_from_now = (datetime.now(timezone.utc) + timedelta(hours=5)).hour
    declare(
        ("a.every_two", EverySeconds(2), True),
        ("a.far_hour", CronSchedule(f"0 0 {hour_from_now} * * ?", "UTC"), True),
        ("a.local", EverySeconds(1), False),
    )

    schedule = NodeAwareScheduler(app=app, lazy=True).schedule

    assert schedule["a.every_two"].schedule == TickSchedule(EverySeconds(2))
    assert schedule["a.far_hour"].schedule == TickSchedule(CronSchedule(f"0 0 {hour_from_now} * * ?", "UTC"))
    assert "a.local" not in schedule


@pytest.mark.django_db(transaction=True)  # django-celery-beat commits and closes connections itself
def test_a_node_without_job_scheduling_schedules_nothing(settings):
    declare(("a.every_two", EverySeconds(2), True))
    settings.JOB_SCHEDULING = False

    assert NodeAwareScheduler(app=app, lazy=True).schedule == {}


@pytest.mark.django_db(transaction=True)  # django-celery-beat commits and closes connections itself
def test_the_message_carries_the_latest_tick_on_the_scheduler_queue(settings):
    settings.SCHEDULER_QUEUE = f"test-{uuid.uuid4().hex[:8]}"
    declare(("a.every_two", EverySeconds(2), True))
    scheduler = NodeAwareScheduler(app=app, lazy=True)
    entry = scheduler.schedule["a.every_two"]

    before = datetime.now(timezone.utc)
    scheduler.apply_async(entry, advance=False)

    with Connection(settings.CELERY_BROKER_URL) as broker:
        queue = broker.SimpleQueue(settings.SCHEDULER_QUEUE)
        message = queue.get(timeout=5)
        message.ack()
        queue.close()
    args, kwargs, _ = message.payload
    tick = datetime.fromisoformat(kwargs["tick"])
    assert message.headers["task"] == "scheduling.run_clustered_job"
    assert kwargs["job"] == "a.every_two" and kwargs["schedule"] == {"every_seconds": 2}
    assert tick == EverySeconds(2).latest_tick_at_or_before(before) or tick == EverySeconds(2).next_tick_after(before)
    assert "tick" not in entry.kwargs  # the entry itself is unchanged; each send stamps its own tick


BERLIN_NIGHTS = {  # (first minute, last minute) in UTC around 02:00-03:00 local time
    "clocks go back": (
        datetime(2024, 10, 26, 23, 50, tzinfo=timezone.utc),
        datetime(2024, 10, 27, 2, 10, tzinfo=timezone.utc),
    ),
    "clocks go forward": (
        datetime(2024, 3, 30, 23, 50, tzinfo=timezone.utc),
        datetime(2024, 3, 31, 2, 10, tzinfo=timezone.utc),
    ),
}


@pytest.mark.django_db(transaction=True)  # django-celery-beat commits and closes connections itself
@pytest.mark.parametrize("night", list(BERLIN_NIGHTS))
def test_beat_through_a_daylight_saving_night_sends_each_calendar_occurrence_once(night, settings, monkeypatch):
    """Beat's own entries and due-checks, minute by minute through the night on a moved clock, send to Redis."""
    settings.SCHEDULER_QUEUE = f"test-{uuid.uuid4().hex[:8]}"
    first, last = BERLIN_NIGHTS[night]
    clock = {"now": first}
    monkeypatch.setattr(database_clock, "now", lambda: clock["now"])  # beat's every reading of the time
    half_past_two = CronSchedule("0 30 2 * * ?", "Europe/Berlin")
    quarterly = CronSchedule("0 */15 * * * ?", "Europe/Berlin")
    declare(("dst.half_past_two", half_past_two, True), ("dst.quarterly", quarterly, True))
    PeriodicTask.objects.filter(name__startswith="dst.").update(last_run_at=first)  # a beat up since before the night
    scheduler = NodeAwareScheduler(app=app, lazy=True)
    entries = {name: scheduler.schedule[name] for name in ("dst.half_past_two", "dst.quarterly")}

    print({n: (e.last_run_at, e.schedule, e.schedule.now(), e.is_due()) for n, e in entries.items()})
    while clock["now"] <= last:
        for name, entry in entries.items():
            if entry.is_due().is_due:
                scheduler.apply_async(entry, advance=False)
                entries[name] = next(entry)  # what beat does after a send: last_run_at is now
        clock["now"] += timedelta(minutes=1)

    sent: dict[str, list[datetime]] = {}
    with Connection(settings.CELERY_BROKER_URL) as broker:
        queue = broker.SimpleQueue(settings.SCHEDULER_QUEUE)
        for _ in range(queue.qsize()):  # Redis drops a list once it is empty: count first, then take
            message = queue.get(timeout=5)
            message.ack()
            sent.setdefault(message.payload[1]["job"], []).append(datetime.fromisoformat(message.payload[1]["tick"]))
        queue.close()
    utc = timezone.utc
    if night == "clocks go back":
        # 02:30 comes twice (CEST, then CET): once is sent. Every quarter-hour of real time is sent, both passes.
        assert sent["dst.half_past_two"] == [datetime(2024, 10, 27, 0, 30, tzinfo=utc)]
        assert sent["dst.quarterly"] == [
            datetime(2024, 10, 27, 0, 0, tzinfo=utc) + timedelta(minutes=15 * n) for n in range(9)
        ]
    else:
        # 02:30 never comes: it is sent when the gap ends (03:00 CEST). No quarter-hour of the skipped hour exists.
        assert sent["dst.half_past_two"] == [datetime(2024, 3, 31, 1, 0, tzinfo=utc)]
        assert sent["dst.quarterly"] == [
            datetime(2024, 3, 31, 0, 0, tzinfo=utc) + timedelta(minutes=15 * n) for n in range(9)
        ]


@pytest.mark.django_db
@pytest.mark.parametrize("skew", [45, -45])
def test_beat_reads_the_database_clock_whatever_its_host_clock_says(skew):
    clock = DatabaseClock(host_now=lambda: datetime.now(UTC) + timedelta(seconds=skew))

    assert abs((clock.now() - database_now()).total_seconds()) < 1
    assert abs(clock.offset.total_seconds() + skew) < 1


@pytest.mark.django_db(transaction=True)  # django-celery-beat commits and closes connections itself
def test_a_send_that_straddles_the_next_tick_carries_the_tick_found_due(settings, monkeypatch):
    settings.SCHEDULER_QUEUE = f"test-{uuid.uuid4().hex[:8]}"
    clock = {"now": T0 + timedelta(seconds=1.999)}
    monkeypatch.setattr(database_clock, "now", lambda: clock["now"])
    declare(("a.every_two", EverySeconds(2), True))
    PeriodicTask.objects.filter(name="a.every_two").update(last_run_at=T0 - timedelta(seconds=1))
    entry = NodeAwareScheduler(app=app, lazy=True).schedule["a.every_two"]

    assert entry.is_due().is_due
    clock["now"] += timedelta(seconds=0.002)  # the next tick (T0 + 2 s) comes while beat sends T0's
    NodeAwareScheduler(app=app, lazy=True).apply_async(entry, advance=False)

    with Connection(settings.CELERY_BROKER_URL) as broker:
        queue = broker.SimpleQueue(settings.SCHEDULER_QUEUE)
        message = queue.get(timeout=5)
        message.ack()
        queue.close()
    assert datetime.fromisoformat(message.payload[1]["tick"]) == T0


@pytest.mark.django_db(transaction=True)  # django-celery-beat commits and closes connections itself
def test_jobs_a_beat_of_the_previous_release_disabled_are_declared_again_by_this_releases_beat(monkeypatch):
    new_job = ScheduledJob("a.new_in_this_release", noop, EverySeconds(2), True, False)
    this_release = JobRegistry()
    this_release.add(new_job)
    monkeypatch.setattr(beat, "registry", this_release)
    sync_declared_jobs([new_job])
    scheduler = NodeAwareScheduler(app=app, lazy=True)
    assert "a.new_in_this_release" in scheduler.schedule
    scheduler.schedule_changed()  # beat's loop checks the change marker every few seconds; the first check notes it

    # What the previous release's sync did at its beat's start to every job it did not declare.
    row = PeriodicTask.objects.get(name="a.new_in_this_release")
    row.enabled, row.description = False, REMOVED_FROM_CODE
    row.save()  # moves django-celery-beat's change marker, as the old beat's save did

    assert "a.new_in_this_release" in scheduler.schedule
    assert PeriodicTask.objects.get(name="a.new_in_this_release").enabled

"""The beat scheduler of every node: django-celery-beat's, with exact ticks, switched off by `JOB_SCHEDULING=false`.

Rows of clustered jobs fire on their own schedule (cron with seconds, or an interval aligned to the epoch),
read from the row's kwargs, and every message, sent to this beat's SCHEDULER_QUEUE, carries the tick it is for: the latest point on the schedule
at or before the moment beat sends it. A beat that was down therefore sends one message for the latest
missed tick (one catch-up run), never the backlog; two beats send the same tick, and Postgres keeps one.

Every time beat reads — "which tick is due", "when did this entry last send" — is the database's clock
(`scheduling.clock`), not the host's: a beat on a host 45 s ahead would otherwise send each tick 45 s early,
and its `last_run_at` (also read by the other beats after a reload) would hide ticks from them. The tick a
message carries is the one found due, not recomputed at sending, so a send that straddles the next tick
neither skips the due one nor sends the next one early.
"""

from __future__ import annotations

import logging
from datetime import datetime

from celery.schedules import BaseSchedule, schedstate
from django.conf import settings
from django.db import DatabaseError
from django_celery_beat.schedulers import DatabaseScheduler, ModelEntry

from scheduling.clock import database_clock
from scheduling.registry import SCRIPT_JOB_PREFIX, registry
from scheduling.schedules import Schedule, schedule_from_dict
from scheduling.sync import CLUSTERED_TASK, LOCAL_TASK, sync_declared_jobs

logger = logging.getLogger(__name__)


class TickSchedule(BaseSchedule):
    """A celery schedule over our ticks, on the database's clock: due when a tick has come since the last send."""

    def __init__(self, ticks: Schedule, app=None):
        super().__init__(nowfun=database_clock.now, app=app)
        self.ticks = ticks
        self.due_tick: datetime | None = None  # the tick `is_due` found due: the one the message carries

    def latest_tick(self) -> datetime:
        return self.ticks.latest_tick_at_or_before(self.now())

    def is_due(self, last_run_at: datetime) -> schedstate:
        now = self.now()
        latest = self.ticks.latest_tick_at_or_before(now)
        due = latest > last_run_at
        if due:
            self.due_tick = latest
        return schedstate(due, (self.ticks.next_tick_after(now) - now).total_seconds())

    def remaining_estimate(self, last_run_at: datetime):
        now = self.now()
        return self.ticks.next_tick_after(max(now, last_run_at)) - now

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TickSchedule) and other.ticks == self.ticks

    def __repr__(self) -> str:
        return f"<TickSchedule: {self.ticks}>"


class ScheduledJobEntry(ModelEntry):
    """A PeriodicTask row; a clustered job's row fires on the exact schedule held in its kwargs."""

    def __init__(self, model, app=None):
        super().__init__(model, app=app)
        if model.task == CLUSTERED_TASK:
            try:
                ticks = schedule_from_dict(self.kwargs["schedule"])
            except (KeyError, TypeError, ValueError) as exc:
                logger.error("not scheduling %s: its kwargs hold no valid schedule (%s)", model.name, exc)
                raise ValueError(model.name) from exc  # django-celery-beat leaves the row out
            self.schedule = TickSchedule(ticks, app=self.app)

    def _default_now(self) -> datetime:
        """What `last_run_at` is stamped with and compared to: the database's time, the same on every beat."""
        return database_clock.now()


class NodeAwareScheduler(DatabaseScheduler):
    """A beat on a node with `JOB_SCHEDULING=false` stays up but schedules nothing."""

    Entry = ScheduledJobEntry

    def setup_schedule(self) -> None:
        if not settings.JOB_SCHEDULING:
            logger.warning("JOB_SCHEDULING=false on node %s: this beat schedules nothing", settings.NODE_ID)
            return
        sync_declared_jobs(registry.all())
        super().setup_schedule()

    @property
    def schedule(self) -> dict:
        if not settings.JOB_SCHEDULING:
            return {}
        return super().schedule

    def schedule_changed(self) -> bool:
        """When the rows changed, declare this release's jobs again before reading them: a beat of the previous
        release, starting mid-upgrade, disables every job it does not declare (this release's sync never does),
        and its change reaches this beat here, within a loop."""
        changed = super().schedule_changed()
        if changed:
            try:
                sync_declared_jobs(registry.all())
            except DatabaseError:
                logger.exception("declaring the scheduled jobs again failed; the next change tries again")
        return changed

    def enabled_models_qs(self):
        """Clustered jobs always, custom scripts' only while CUSTOM_SCRIPTS_ENABLED; local jobs never (each worker
        process runs those itself)."""
        others = super().enabled_models_qs().exclude(task__in=(CLUSTERED_TASK, LOCAL_TASK))
        clustered = self.Model.objects.enabled().filter(task=CLUSTERED_TASK)
        if not settings.CUSTOM_SCRIPTS_ENABLED:
            clustered = clustered.exclude(name__startswith=SCRIPT_JOB_PREFIX)
        return others | clustered

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        if isinstance(entry.schedule, TickSchedule):
            tick = entry.schedule.due_tick or entry.schedule.latest_tick()
            entry = _stamped(entry, tick=tick.isoformat(), queue=settings.SCHEDULER_QUEUE)
        return super().apply_async(entry, producer=producer, advance=advance, **kwargs)


def _stamped(entry: ScheduledJobEntry, tick: str, queue: str) -> ScheduledJobEntry:
    """A shallow copy sending `tick` to `queue` (`copy.copy` cannot: ScheduleEntry pickles to other arguments)."""
    copied = object.__new__(type(entry))
    copied.__dict__.update(entry.__dict__)
    copied.kwargs = {**entry.kwargs, "tick": tick}
    copied.options = {**entry.options, "queue": queue}
    return copied

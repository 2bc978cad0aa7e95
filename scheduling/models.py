"""What ran when (JobRun), and the custom scripts superusers upload (CustomScript, ScriptAudit).

The schedules themselves live in django-celery-beat's PeriodicTask rows, synced from the declarations.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django_celery_beat.models import PeriodicTask


class RunOutcome(models.TextChoices):
    RUNNING = "running", "running"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    SKIPPED = "skipped", "skipped: the previous run was still going"
    MISSED = "missed", "missed: the message came after the next tick"
    ABANDONED = "abandoned", "abandoned: its process stopped heartbeating"


class JobRun(models.Model):
    """One occurrence (tick) of a clustered job. Unique per (job, tick): whoever inserts the row runs it."""

    job_name = models.CharField(max_length=200)
    tick = models.DateTimeField(help_text="The point on the schedule this run is for (not when it started).")
    node = models.CharField(max_length=64)
    process = models.CharField(max_length=120, help_text="host:pid")
    started_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=RunOutcome.choices)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-tick"]
        constraints = [
            models.UniqueConstraint(fields=["job_name", "tick"], name="scheduling_one_run_per_tick"),
            # A job never overlaps itself: a second running row for the same job cannot be inserted.
            models.UniqueConstraint(
                fields=["job_name"], condition=Q(outcome="running"), name="scheduling_one_running_run_per_job"
            ),
        ]
        indexes = [models.Index(fields=["started_at"], name="scheduling_run_started_idx")]

    def __str__(self) -> str:
        return f"{self.job_name} @ {self.tick:%Y-%m-%d %H:%M:%S} {self.outcome}"

    @property
    def start_delay_seconds(self) -> float:
        return (self.started_at - self.tick).total_seconds()


class CustomScript(models.Model):
    """Python source defining `@scheduled` functions, uploaded at run time; loaded from here by every node."""

    name = models.CharField(max_length=64, unique=True)
    source = models.TextField()
    sha256 = models.CharField(max_length=64)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ScriptAction(models.TextChoices):
    CREATED = "created"
    UPDATED = "updated"
    ENABLED = "enabled"
    DISABLED = "disabled"
    DELETED = "deleted"


class ScriptAudit(models.Model):
    """Who changed which script when, and the hash of the source they uploaded. Never edited or deleted."""

    script_name = models.CharField(max_length=64)
    action = models.CharField(max_length=16, choices=ScriptAction.choices)
    sha256 = models.CharField(max_length=64)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    username = models.CharField(max_length=150, help_text="Kept when the user is deleted.")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.script_name} {self.action} by {self.username}"


class ScheduledJobSchedule(PeriodicTask):
    """The admin's view of a scheduled job: its django-celery-beat row (no table of its own). Its `change`
    permission is what pausing, resuming and "run now" require."""

    class Meta:
        proxy = True
        verbose_name = "scheduled job"
        verbose_name_plural = "scheduled jobs"

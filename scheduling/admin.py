"""The durable dashboard of scheduled work: the scheduled jobs, their runs, custom scripts and their audit trail.

"Scheduled jobs" lists clustered and local jobs with their schedule, next and last run, and pauses, resumes or
runs them now (through `scheduling.operations`), by a button on the row, on the job's page, or for many rows at
once by the bulk actions. A job's page shows its tick history: every recent tick of its schedule with its run,
so a tick that was skipped, missed or never run shows. Changing anything needs the model's `change` permission.
"""

from __future__ import annotations

import re

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import mark_safe

from jobsite.display import moment, short_duration
from scheduling import operations, scripts
from scheduling.exceptions import InvalidScript, SchedulingError, UnknownJob
from scheduling.models import CustomScript, JobRun, ScheduledJobSchedule, ScriptAudit
from scheduling.schedules import EverySeconds


def _outcome(outcome: str | None) -> str:
    if outcome is None:
        return "-"
    return format_html('<span class="outcome outcome-{}">{}</span>', outcome, outcome)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class KindFilter(admin.SimpleListFilter):
    title = "kind"
    parameter_name = "kind"

    def lookups(self, request, model_admin):
        return [("clustered", "clustered: once in the cluster"), ("local", "local: in every process")]

    def queryset(self, request, queryset):
        if self.value() in operations.KINDS:
            return queryset.filter(task=operations.KINDS[self.value()])
        return queryset


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", "active"), ("paused", "paused")]

    def queryset(self, request, queryset):
        if self.value() in ("active", "paused"):
            return queryset.filter(enabled=self.value() == "active")
        return queryset


@admin.register(ScheduledJobSchedule)
class ScheduledJobAdmin(admin.ModelAdmin):
    """Every clustered and local job, with pause/resume and run-now; the recent runs below, failures in red."""

    list_display = ["job_name", "kind", "schedule", "state", "next_run", "last_run", "last_outcome"]
    list_display_links = ["job_name"]
    list_filter = [StateFilter, KindFilter]
    search_fields = ["name"]
    ordering = ["name"]
    actions = ["pause_jobs", "resume_jobs", "run_jobs_now"]
    change_list_template = "admin/scheduling/scheduledjobschedule/change_list.html"

    class Media:
        css = {"all": ["dashboard/dashboard.css"]}
        js = ["dashboard/dashboard.js"]

    def get_queryset(self, request):
        return operations.scheduled_job_rows()

    def has_add_permission(self, request) -> bool:
        return False  # jobs are declared in code or uploaded as scripts

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_list_display(self, request):
        return [*self.list_display, "buttons"] if self.has_change_permission(request) else self.list_display

    def get_urls(self):
        own = [
            path("<int:job_id>/pause/", self.admin_site.admin_view(self.pause_view), name="scheduling_job_pause"),
            path("<int:job_id>/resume/", self.admin_site.admin_view(self.resume_view), name="scheduling_job_resume"),
            path("<int:job_id>/run-now/", self.admin_site.admin_view(self.run_now_view), name="scheduling_job_run_now"),
        ]
        return own + super().get_urls()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """A job's page: what it is, its buttons, and its tick history (clustered jobs: local ones are not recorded)."""
        job = self.get_object(request, object_id)
        if job is None or not self.has_view_or_change_permission(request, job):
            raise Http404(f"no scheduled job {object_id}")
        now = timezone.now()
        clustered = operations.is_clustered(job)
        context = {
            **self.admin_site.each_context(request),
            "title": job.name,
            "opts": self.model._meta,
            "job": job,
            "kind": self.kind(job),
            "schedule": self.schedule(job),
            "next_run": operations.next_run(job, now),
            "clustered": clustered,
            "ticks": [
                (entry, short_duration(entry.duration_seconds))
                for entry in (operations.tick_history(job, now) if clustered else [])
            ],
            "may_change": self.has_change_permission(request, job),
            "runs_url": f"{reverse('admin:scheduling_jobrun_changelist')}?{urlencode({'job_name': job.name})}",
        }
        return TemplateResponse(request, "admin/scheduling/scheduledjobschedule/job.html", context)

    def changelist_view(self, request, extra_context=None):
        """The recent runs below the table take their own filters (`runs_job`, `runs`=problems), kept out of the
        changelist's query, which would refuse parameters it does not know."""
        query = request.GET.copy()
        runs_job, problems_only = query.pop("runs_job", [""])[-1], query.pop("runs", [""])[-1] == "problems"
        request.GET = query
        return super().changelist_view(
            request,
            {
                "title": "Scheduled jobs",
                **(extra_context or {}),
                "recent_runs": operations.recent_runs(job_name=runs_job or None, problems_only=problems_only),
                "runs_job": runs_job,
                "runs_problems_only": problems_only,
                "run_job_names": operations.recorded_job_names(),
            },
        )

    def pause_view(self, request: HttpRequest, job_id: int) -> HttpResponse:
        return self._act(request, job_id, lambda name: operations.set_paused([name], paused=True), "Paused")

    def resume_view(self, request: HttpRequest, job_id: int) -> HttpResponse:
        return self._act(request, job_id, lambda name: operations.set_paused([name], paused=False), "Resumed")

    def run_now_view(self, request: HttpRequest, job_id: int) -> HttpResponse:
        return self._act(request, job_id, operations.run_now, "Sent to run once now:")

    def _act(self, request: HttpRequest, job_id: int, action, done: str) -> HttpResponse:
        """POST only, with the `change` permission; back to the page the button was on (`back`=job: its page)."""
        if request.method != "POST":
            return HttpResponse(status=405, headers={"Allow": "POST"})
        job = self.get_object(request, str(job_id))
        if job is None:
            raise Http404(f"no scheduled job {job_id}")
        if not self.has_change_permission(request, job):
            raise PermissionDenied
        try:
            action(job.name)
        except UnknownJob:
            raise Http404(f"no scheduled job {job.name}") from None
        except SchedulingError as exc:
            self.message_user(request, str(exc), messages.WARNING)
        else:  # the job's name after the verb: the admin capitalises a message's first letter
            self.message_user(request, f"{done} {job.name}", messages.SUCCESS)
        if request.POST.get("back") == "job":
            return HttpResponseRedirect(reverse("admin:scheduling_scheduledjobschedule_change", args=[job.pk]))
        return HttpResponseRedirect(reverse("admin:scheduling_scheduledjobschedule_changelist"))

    @admin.display(description="name", ordering="name")
    def job_name(self, job) -> str:
        """Dotted names are long: a line may break after a dot or an underscore, not inside a word."""
        parts = re.split(r"(?<=[._])", job.name)
        return format_html_join(mark_safe("<wbr>"), "{}", ((part,) for part in parts))

    @admin.display(description="kind", ordering="task")
    def kind(self, job) -> str:
        return "clustered" if operations.is_clustered(job) else "local"

    @admin.display(description="schedule")
    def schedule(self, job) -> str:
        schedule = operations.schedule_of(job)
        if isinstance(schedule, EverySeconds):  # "every 1 h" rather than "every 3600 s"
            return format_html('<span title="{}">every {}</span>', str(schedule), short_duration(schedule.seconds))
        return str(schedule)

    @admin.display(description="state", ordering="enabled")
    def state(self, job) -> str:
        return format_html(
            '<span class="{}">{}</span>', "" if job.enabled else "warn", "active" if job.enabled else "paused"
        )

    @admin.display(description="next run")
    def next_run(self, job) -> str:
        return moment(operations.next_run(job, timezone.now())) if job.enabled else "-"

    @admin.display(description="last run", ordering="last_tick")
    def last_run(self, job) -> str:
        if not operations.is_clustered(job):
            return format_html(
                '<span class="quiet" title="{}">in every process</span>',
                "local jobs run in every worker process and are logged, not recorded",
            )
        run = operations.last_run(job)
        return moment(run.started_at) if run else "never"

    @admin.display(description="outcome")
    def last_outcome(self, job) -> str:
        """The last run's outcome and, once it finished, how long it took (one column: the row fits 1280 px)."""
        run = operations.last_run(job)
        if run is None or run.duration_seconds is None:
            return _outcome(run.outcome if run else None)
        return format_html(
            '{}<br><span class="quiet">{}</span>', _outcome(run.outcome), short_duration(run.duration_seconds)
        )

    @admin.display(description="")
    def buttons(self, job) -> str:
        """Pause or resume, and run now (clustered jobs), as buttons of the changelist's own form (its CSRF token;
        `formaction` sends the click to the job's URL); a column only for those who may change jobs."""
        verb, url_name = ("Resume", "scheduling_job_resume") if not job.enabled else ("Pause", "scheduling_job_pause")
        buttons = [
            format_html(
                '<button type="submit" class="button row-button" formmethod="post" formaction="{}" '
                'name="back" value="list">{}</button>',
                reverse(f"admin:{url_name}", args=[job.pk]),
                verb,
            )
        ]
        if operations.is_clustered(job):
            buttons.append(
                format_html(
                    '<button type="submit" class="button row-button" formmethod="post" formaction="{}" name="back" '
                    'value="list">Run now</button>',
                    reverse("admin:scheduling_job_run_now", args=[job.pk]),
                )
            )
        return format_html('<span class="row-buttons">{}</span>', mark_safe("".join(buttons)))

    @admin.action(description="Pause the selected jobs", permissions=["change"])
    def pause_jobs(self, request, queryset) -> None:
        names = list(queryset.values_list("name", flat=True))
        changed = operations.set_paused(names, paused=True)
        self.message_user(request, f"{changed} job(s) paused: {', '.join(names)}", messages.SUCCESS)

    @admin.action(description="Resume the selected jobs", permissions=["change"])
    def resume_jobs(self, request, queryset) -> None:
        names = list(queryset.values_list("name", flat=True))
        changed = operations.set_paused(names, paused=False)
        self.message_user(request, f"{changed} job(s) resumed: {', '.join(names)}", messages.SUCCESS)

    @admin.action(description="Run the selected clustered jobs now (once in the cluster)", permissions=["change"])
    def run_jobs_now(self, request, queryset) -> None:
        for name in queryset.values_list("name", flat=True):
            try:
                operations.run_now(name)
            except SchedulingError as exc:
                self.message_user(request, str(exc), messages.WARNING)
            else:
                self.message_user(request, f"Sent to run once now: {name}", messages.SUCCESS)


@admin.register(JobRun)
class JobRunAdmin(ReadOnlyAdmin):
    list_display = ["job_name", "tick_time", "outcome_shown", "node", "process", "started", "took", "start_delay"]
    list_filter = ["outcome", "node", "job_name"]
    search_fields = ["job_name", "process"]
    date_hierarchy = "tick"

    class Media:
        css = {"all": ["dashboard/dashboard.css"]}
        js = ["dashboard/dashboard.js"]

    @admin.display(description="tick", ordering="tick")
    def tick_time(self, run: JobRun) -> str:
        return moment(run.tick)

    @admin.display(description="outcome", ordering="outcome")
    def outcome_shown(self, run: JobRun) -> str:
        return _outcome(run.outcome)

    @admin.display(description="started", ordering="started_at")
    def started(self, run: JobRun) -> str:
        return moment(run.started_at)

    @admin.display(description="took")
    def took(self, run: JobRun) -> str:
        return short_duration((run.finished_at - run.started_at).total_seconds()) if run.finished_at else "-"

    @admin.display(description="start delay (s)")
    def start_delay(self, run: JobRun) -> str:
        return f"{run.start_delay_seconds:.3f}"


@admin.register(ScriptAudit)
class ScriptAuditAdmin(ReadOnlyAdmin):
    list_display = ["at", "script_name", "action", "username", "sha256"]
    list_filter = ["action", "script_name"]

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class CustomScriptForm(forms.ModelForm):
    class Meta:
        model = CustomScript
        fields = ["name", "source", "enabled"]
        widgets = {"source": forms.Textarea(attrs={"rows": 30, "cols": 100, "style": "font-family: monospace"})}

    def clean(self) -> dict:
        """The static check of `/control/scripts` (compiled, declarations read from the syntax tree): none of the
        script's code runs in the web process."""
        data = super().clean()
        if "name" in data and "source" in data:
            try:
                scripts.check_script(data["name"], data["source"])
            except InvalidScript as exc:
                raise ValidationError({"source": str(exc)}) from None
        return data


@admin.register(CustomScript)
class CustomScriptAdmin(admin.ModelAdmin):
    """Superusers only, and only with CUSTOM_SCRIPTS_ENABLED=true; every save goes through the audited service."""

    form = CustomScriptForm
    list_display = ["name", "enabled", "updated_at", "updated_by", "sha256"]
    readonly_fields = ["sha256", "created_at", "updated_at", "updated_by"]
    actions = ["enable_scripts", "disable_scripts"]

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "name"] if obj else self.readonly_fields

    def changelist_view(self, request, extra_context=None):
        self._say_when_switched_off(request)
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        self._say_when_switched_off(request)
        return super().change_view(request, object_id, form_url, extra_context)

    def _say_when_switched_off(self, request) -> None:
        """The rows stay visible, so say plainly that none of them is scheduled or run on this node."""
        if not settings.CUSTOM_SCRIPTS_ENABLED and request.method == "GET":
            messages.warning(
                request,
                "Custom scripts are switched off on this node (CUSTOM_SCRIPTS_ENABLED=false): "
                "none of these scripts is scheduled or run, and they cannot be changed here.",
            )

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser

    def has_add_permission(self, request) -> bool:
        return request.user.is_superuser and settings.CUSTOM_SCRIPTS_ENABLED

    def has_change_permission(self, request, obj=None) -> bool:
        return self.has_add_permission(request)

    def has_delete_permission(self, request, obj=None) -> bool:
        return self.has_add_permission(request)

    def save_model(self, request, obj: CustomScript, form, change: bool) -> None:
        if change:
            saved = scripts.update_script(obj.name, request.user, source=obj.source, enabled=obj.enabled)
        else:
            saved = scripts.create_script(obj.name, obj.source, request.user, enabled=obj.enabled)
        obj.pk, obj.sha256 = saved.pk, saved.sha256

    def delete_model(self, request, obj: CustomScript) -> None:
        scripts.delete_script(obj.name, request.user)

    def delete_queryset(self, request, queryset) -> None:
        for script in queryset:
            scripts.delete_script(script.name, request.user)

    @admin.action(description="Enable the selected scripts", permissions=["change"])
    def enable_scripts(self, request, queryset) -> None:
        self._switch(request, queryset, enabled=True)

    @admin.action(description="Disable the selected scripts", permissions=["change"])
    def disable_scripts(self, request, queryset) -> None:
        self._switch(request, queryset, enabled=False)

    def _switch(self, request, queryset, enabled: bool) -> None:
        for script in queryset:
            try:
                scripts.update_script(script.name, request.user, enabled=enabled)
            except SchedulingError as exc:
                self.message_user(request, f"{script.name}: {exc}", messages.ERROR)

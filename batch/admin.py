"""The Django admin as the job dashboard: an overview, the job list, a read-only job page, the chunks.

Thin over `batch.control` (cancel, restart, snapshots) and `batch.dashboard` (the aggregates); nothing here
changes a status by itself. Changing a job (cancel, restart) needs the `change` permission on jobs; viewing
needs `view`. Jobs and chunks are never edited or deleted here: pages show no Save or Delete.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import CharField, QuerySet
from django.db.models.functions import Cast
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from batch import control, dashboard
from batch.control import BatchError, JobNotFound
from batch.models import JobInstance, WorkChunk
from batch.statuses import RESTARTABLE_JOB_STATUSES, UNFINISHED_JOB_STATUSES, JobStatus
from jobsite.display import moment, short_duration

REFRESH_SECONDS = 3  # how often the overview and an unfinished job's page refresh their live parts


def _search_by_id(queryset: QuerySet, term: str, field: str = "id") -> QuerySet:
    """A full id matches exactly (index); a shorter term matches ids starting with it."""
    term = term.strip().lower()
    try:
        return queryset.filter(**{field: uuid.UUID(term)})
    except ValueError:
        return queryset.annotate(id_text=Cast(field, CharField())).filter(id_text__startswith=term)


@admin.register(JobInstance)
class JobInstanceAdmin(admin.ModelAdmin):
    list_display = ("short_id", "definition", "status_badge", "progress_bar", "records", "timing", "started", "errors")
    list_display_links = ("short_id",)
    list_filter = ("status", "definition_id", "node_id", "started_by")
    search_fields = ("id",)
    search_help_text = "Job instance id, or its first characters"
    ordering = ("-create_time",)
    list_per_page = 50
    actions = ("cancel_jobs", "restart_jobs", "retry_failed_chunks")
    change_list_template = "admin/batch/jobinstance/change_list.html"

    class Media:
        css = {"all": ["dashboard/dashboard.css"]}
        js = ["dashboard/dashboard.js"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # jobs start through the control API or `manage.py start_job`

    def has_delete_permission(self, request: HttpRequest, obj: JobInstance | None = None) -> bool:
        return False  # ended jobs are purged by maintenance; a running one is cancelled, not deleted

    def get_search_results(self, request, queryset, search_term):
        if not search_term:
            return queryset, False
        return _search_by_id(queryset, search_term), False

    def changelist_view(self, request: HttpRequest, extra_context=None) -> HttpResponse:
        return super().changelist_view(request, {"title": "Jobs", **(extra_context or {})})

    def get_urls(self):
        own = [
            path("dashboard/", self.admin_site.admin_view(self.overview_view), name="batch_dashboard"),
            path(
                "<uuid:job_id>/cancel/", self.admin_site.admin_view(self.cancel_view), name="batch_jobinstance_cancel"
            ),
            path(
                "<uuid:job_id>/restart/",
                self.admin_site.admin_view(self.restart_view),
                name="batch_jobinstance_restart",
            ),
            path("<uuid:job_id>/retry/", self.admin_site.admin_view(self.retry_view), name="batch_jobinstance_retry"),
        ]
        return own + super().get_urls()

    # --- the columns of the job list (it fits 1280 px; the rest is on the job page) ---

    @admin.display(description="id", ordering="id")
    def short_id(self, instance: JobInstance) -> str:
        return str(instance.id)[:8]

    @admin.display(description="definition", ordering="definition_id")
    def definition(self, instance: JobInstance) -> str:
        return instance.definition_id

    @admin.display(description="progress", ordering="progress")
    def progress_bar(self, instance: JobInstance) -> str:
        return format_html(
            '<progress value="{}" max="1"></progress> {}%', f"{instance.progress:.3f}", round(instance.progress * 100)
        )

    @admin.display(description="records", ordering="combined_records_processed")
    def records(self, instance: JobInstance) -> str:
        return f"{instance.combined_records_processed:,}"

    @admin.display(description="status", ordering="status")
    def status_badge(self, instance: JobInstance) -> str:
        return format_html('<span class="badge status-{}">{}</span>', instance.status.lower(), instance.status)

    @admin.display(description="ETA / took")
    def timing(self, instance: JobInstance) -> str:
        """An unfinished job's ETA, an ended job's duration: the one figure of the two that means something."""
        if instance.status in UNFINISHED_JOB_STATUSES:
            return f"ETA {short_duration(instance.estimated_seconds_remaining)}"
        return short_duration(instance.elapsed_seconds)

    @admin.display(description="started", ordering="start_time")
    def started(self, instance: JobInstance) -> str:
        return moment(instance.start_time or instance.create_time)

    @admin.display(description="errors", ordering="error_count")
    def errors(self, instance: JobInstance) -> int:
        return instance.error_count

    # --- pages ---

    def overview_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "Batch dashboard",
            "opts": self.model._meta,
            "counts": dashboard.job_counts_by_status(),
            "throughput": dashboard.throughput_per_minute(),
            "running": dashboard.running_jobs(),
            "nodes": dashboard.node_activity(),
            "flower_url": settings.BATCH_FLOWER_URL,
            "refresh_seconds": REFRESH_SECONDS,
        }
        return TemplateResponse(request, "admin/batch/dashboard.html", context)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None) -> HttpResponse:
        """The job page: read-only, with Cancel and Restart for those who may change jobs."""
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        try:
            job = control.get_job(object_id)
        except (JobNotFound, ValueError, BatchError):
            raise Http404(f"no job {object_id}") from None
        may_change = self.has_change_permission(request)
        context = {
            **self.admin_site.each_context(request),
            "title": f"{job.definition_id} {str(job.id)[:8]}",
            "opts": self.model._meta,
            "job": job,
            "timeline": dashboard.step_timeline(job),
            "errors": dashboard.job_errors(job.id),
            "waiting": dashboard.why_waiting(job),
            "may_retry": may_change and job.status not in (JobStatus.COMPLETED,),
            "workers": control.chunk_workers(job.id),
            "may_cancel": may_change and not job.ended,
            "may_restart": may_change and job.status in RESTARTABLE_JOB_STATUSES,
            "refresh_seconds": 0 if job.ended else REFRESH_SECONDS,
            "flower_url": settings.BATCH_FLOWER_URL,
        }
        return TemplateResponse(request, "admin/batch/jobinstance/job.html", context)

    def cancel_view(self, request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
        return self._change_one(request, job_id, control.cancel_job, "cancelled")

    def restart_view(self, request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
        return self._change_one(request, job_id, control.restart_job, "restarted")

    def retry_view(self, request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
        """Retry now the job's failed chunks, or the one chunk the form names (`chunk`)."""
        chunk = request.POST.get("chunk")
        return self._change_one(
            request,
            job_id,
            lambda job: control.retry_failed_chunks(job, [chunk] if chunk else None),
            "retried its failed chunks",
        )

    def _change_one(self, request: HttpRequest, job_id: uuid.UUID, action, done: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponse(status=405, headers={"Allow": "POST"})
        if not self.has_change_permission(request):
            raise PermissionDenied
        try:
            action(job_id)
        except JobNotFound:
            raise Http404(f"no job {job_id}") from None
        except BatchError as error:
            self.message_user(request, str(error), messages.WARNING)
        else:
            self.message_user(request, f"Job {str(job_id)[:8]} {done}", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:batch_jobinstance_change", args=[job_id]))

    # --- actions on the selected jobs (change permission, not view) ---

    @admin.action(description="Cancel the selected jobs", permissions=["change"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[JobInstance]) -> None:
        self._apply(request, queryset, control.cancel_job, "cancelled")

    @admin.action(
        description="Restart the selected jobs (failed or cancelled) where they stopped", permissions=["change"]
    )
    def restart_jobs(self, request: HttpRequest, queryset: QuerySet[JobInstance]) -> None:
        self._apply(request, queryset, control.restart_job, "restarted")

    @admin.action(description="Retry the failed chunks of the selected jobs now", permissions=["change"])
    def retry_failed_chunks(self, request: HttpRequest, queryset: QuerySet[JobInstance]) -> None:
        self._apply(request, queryset, control.retry_failed_chunks, "retried")

    def _apply(self, request: HttpRequest, queryset: QuerySet[JobInstance], action, done: str) -> None:
        succeeded = 0
        for instance_id in queryset.values_list("id", flat=True):
            try:
                action(instance_id)
                succeeded += 1
            except BatchError as error:
                self.message_user(request, str(error), messages.WARNING)
        if succeeded:
            self.message_user(request, f"{succeeded} job(s) {done}", messages.SUCCESS)


@admin.register(WorkChunk)
class WorkChunkAdmin(admin.ModelAdmin):
    list_display = (
        "short_id",
        "job",
        "target_step_id",
        "sequence",
        "status",
        "attempts",
        "error_count",
        "records_processed",
        "started",
        "ended",
        "worker",
        "celery_task",
    )
    list_filter = ("status", "target_step_id")
    search_fields = ("id",)
    search_help_text = "Chunk id, or its first characters"
    list_select_related = ("instance",)
    ordering = ("-create_time",)
    show_full_result_count = False  # counting millions of chunks would be the slowest part of the page

    class Media:
        js = ["dashboard/dashboard.js"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: WorkChunk | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: WorkChunk | None = None) -> bool:
        return False

    def get_search_results(self, request, queryset, search_term):
        if not search_term:
            return queryset, False
        return _search_by_id(queryset, search_term), False

    @admin.display(description="id", ordering="id")
    def short_id(self, chunk: WorkChunk) -> str:
        return str(chunk.id)[:8]

    @admin.display(description="job")
    def job(self, chunk: WorkChunk) -> str:
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:batch_jobinstance_change", args=[chunk.instance_id]),
            f"{chunk.instance.definition_id} {str(chunk.instance_id)[:8]}",
        )

    @admin.display(description="started", ordering="start_time")
    def started(self, chunk: WorkChunk) -> str:
        return moment(chunk.start_time)

    @admin.display(description="ended", ordering="end_time")
    def ended(self, chunk: WorkChunk) -> str:
        return moment(chunk.end_time)

    @admin.display(description="Celery task")
    def celery_task(self, chunk: WorkChunk) -> str:
        if not chunk.task_id:
            return "-"
        return format_html('<a href="{}/task/{}">{}</a>', settings.BATCH_FLOWER_URL, chunk.task_id, chunk.task_id[:8])

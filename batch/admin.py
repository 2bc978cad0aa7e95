"""The Django admin as the durable job dashboard: every job with its progress, chunks and errors.

Actions call `batch.control`; nothing here changes a status by itself. Chunks are read-only.
"""
from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import CharField, QuerySet
from django.db.models.functions import Cast
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from batch import control
from batch.control import BatchError
from batch.models import JobInstance, WorkChunk
from batch.control import describe_duration
from batch.statuses import ChunkStatus

ERRORS_SHOWN = 20  # distinct chunk error messages on a job's page


def _search_by_id(queryset: QuerySet, term: str, field: str = "id") -> QuerySet:
    """A full id matches exactly (index); a shorter term matches ids starting with it."""
    term = term.strip().lower()
    try:
        return queryset.filter(**{field: uuid.UUID(term)})
    except ValueError:
        return queryset.annotate(id_text=Cast(field, CharField())).filter(id_text__startswith=term)


@admin.register(JobInstance)
class JobInstanceAdmin(admin.ModelAdmin):
    list_display = ("short_id", "definition_id", "status", "progress_bar", "combined_records_processed", "rate",
                    "eta", "start_time", "end_time", "error_count")
    list_filter = ("status", "definition_id")
    search_fields = ("id",)
    search_help_text = "Job instance id, or its first characters"
    ordering = ("-create_time",)
    actions = ("cancel_jobs", "restart_jobs")
    fieldsets = (
        (None, {"fields": ("id", "definition_id", "definition_version", "status", "cancelled", "started_by",
                           "node_id", "module_id")}),
        ("Progress", {"fields": ("progress_bar", "combined_records_processed", "rate", "eta", "elapsed_seconds",
                                 "create_time", "start_time", "end_time", "update_time", "current_gated_step_id",
                                 "max_concurrent_chunks")}),
        ("Chunks", {"fields": ("chunks_per_step", "chunk_errors")}),
        ("Errors and warnings", {"fields": ("error_count", "error_message", "warning_messages")}),
        ("Input and output", {"fields": ("parameters", "report")}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: JobInstance | None = None) -> list[str]:
        return [field for fieldset in self.fieldsets for field in fieldset[1]["fields"]]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # jobs start through the control API or `manage.py start_job`

    def get_search_results(self, request, queryset, search_term):
        if not search_term:
            return queryset, False
        return _search_by_id(queryset, search_term), False

    @admin.display(description="id", ordering="id")
    def short_id(self, instance: JobInstance) -> str:
        return str(instance.id)[:8]

    @admin.display(description="progress", ordering="progress")
    def progress_bar(self, instance: JobInstance) -> str:
        return format_html('<progress value="{}" max="1" style="width:8em"></progress> {}%',
                           f"{instance.progress:.3f}", round(instance.progress * 100))

    @admin.display(description="records/s", ordering="records_per_second")
    def rate(self, instance: JobInstance) -> str:
        return f"{instance.records_per_second:.1f}" if instance.records_per_second else "-"

    @admin.display(description="ETA")
    def eta(self, instance: JobInstance) -> str:
        if instance.status not in ("QUEUED", "IN_PROGRESS", "FINALIZE"):
            return "-"
        return describe_duration(instance.estimated_seconds_remaining)

    @admin.display(description="chunks per step and status")
    def chunks_per_step(self, instance: JobInstance) -> str:
        job = control.get_job(instance.id)
        chunk_list = reverse("admin:batch_workchunk_changelist")
        rows = format_html_join("", "<tr><td><a href=\"{}?{}\">{}</a></td><td>{}</td></tr>", (
            (chunk_list, urlencode({"instance__id__exact": instance.id, "target_step_id": step.step_id}), step.step_id,
             ", ".join(f"{status} {count}" for status, count in sorted(step.chunks.items())) or "none")
            for step in job.steps
        ))
        return format_html("<table><tr><th>step</th><th>chunks</th></tr>{}</table>", rows)

    @admin.display(description="chunk errors")
    def chunk_errors(self, instance: JobInstance) -> str:
        failing = (WorkChunk.objects.filter(instance_id=instance.id, error_message__isnull=False)
                   .exclude(status=ChunkStatus.COMPLETED).order_by("-update_time")
                   .values_list("id", "status", "error_message")[:ERRORS_SHOWN])
        if not failing:
            return "none"
        return format_html("<ul>{}</ul>", format_html_join("", "<li><a href=\"{}\">{}</a> {}: {}</li>", (
            (reverse("admin:batch_workchunk_change", args=[chunk_id]), str(chunk_id)[:8], status, message)
            for chunk_id, status, message in failing
        )))

    @admin.action(description="Cancel the selected jobs")
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[JobInstance]) -> None:
        self._apply(request, queryset, control.cancel_job, "cancelled")

    @admin.action(description="Restart the selected jobs (failed or cancelled) where they stopped")
    def restart_jobs(self, request: HttpRequest, queryset: QuerySet[JobInstance]) -> None:
        self._apply(request, queryset, control.restart_job, "restarted")

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
    list_display = ("id", "job", "target_step_id", "sequence", "status", "attempts", "error_count",
                    "records_processed", "start_time", "end_time", "worker", "celery_task")
    list_filter = ("status", "target_step_id")
    search_fields = ("id",)
    search_help_text = "Chunk id, or its first characters"
    list_select_related = ("instance",)
    ordering = ("-create_time",)
    show_full_result_count = False  # counting millions of chunks would be the slowest part of the page

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

    @admin.display(description="job")
    def job(self, chunk: WorkChunk) -> str:
        return format_html('<a href="{}">{}</a>', reverse("admin:batch_jobinstance_change", args=[chunk.instance_id]),
                           f"{chunk.instance.definition_id} {str(chunk.instance_id)[:8]}")

    @admin.display(description="Celery task")
    def celery_task(self, chunk: WorkChunk) -> str:
        if not chunk.task_id:
            return "-"
        return format_html('<a href="{}/task/{}">{}</a>', settings.BATCH_FLOWER_URL, chunk.task_id, chunk.task_id[:8])

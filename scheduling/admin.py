"""The durable dashboard of scheduled work: runs, custom scripts and their audit trail.

The schedules themselves are django-celery-beat's "Periodic tasks" (pause a job there).
"""
from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from scheduling import scripts
from scheduling.exceptions import InvalidScript, SchedulingError
from scheduling.models import CustomScript, JobRun, ScriptAudit


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(JobRun)
class JobRunAdmin(ReadOnlyAdmin):
    list_display = ["job_name", "tick", "outcome", "node", "process", "started_at", "finished_at", "start_delay"]
    list_filter = ["outcome", "node", "job_name"]
    search_fields = ["job_name", "process"]
    date_hierarchy = "tick"

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
        data = super().clean()
        if "name" in data and "source" in data:
            try:
                scripts.compile_script(data["name"], data["source"])
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

    @admin.action(description="Enable the selected scripts")
    def enable_scripts(self, request, queryset) -> None:
        self._switch(request, queryset, enabled=True)

    @admin.action(description="Disable the selected scripts")
    def disable_scripts(self, request, queryset) -> None:
        self._switch(request, queryset, enabled=False)

    def _switch(self, request, queryset, enabled: bool) -> None:
        for script in queryset:
            try:
                scripts.update_script(script.name, request.user, enabled=enabled)
            except SchedulingError as exc:
                self.message_user(request, f"{script.name}: {exc}", messages.ERROR)

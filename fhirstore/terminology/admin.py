"""Loaded code system versions and ValueSet expansions in the admin: read-only, their status at a glance."""

from django.contrib import admin

from fhirstore.terminology.models import CodeSystemVersion, ValueSetExpansion


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(CodeSystemVersion)
class CodeSystemVersionAdmin(ReadOnly):
    list_display = ("system", "version", "status", "concept_count", "closure_count", "created_at", "made_current_at")
    list_filter = ("status", "system")


@admin.register(ValueSetExpansion)
class ValueSetExpansionAdmin(ReadOnly):
    list_display = ("url", "version", "status", "total", "source", "source_version", "updated_at", "error")
    list_filter = ("status",)
    search_fields = ("url",)

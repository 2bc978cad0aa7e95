"""API tokens: stored as a keyed hash with a visible prefix, scoped, optionally expiring."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Scope(models.TextChoices):
    """What a token may be used for; each endpoint declares the one it needs (docs/security.md)."""

    FHIR_READ = "fhir:read", "read FHIR resources"
    FHIR_WRITE = "fhir:write", "create, update and delete FHIR resources"
    EXPORT = "export", "run and download bulk exports"
    IMPORT = "import", "run bulk imports"
    BULK_SUBMIT = "system/bulk-submit", "submit bulk data ($bulk-submit and its status; the STU4 ballot's scope)"
    CONTROL = "control", "operate every job on the control API (operator)"
    ADMIN_DELETE = "admin:delete", "delete resources for good ($delete-expunge), with fhir:write"
    TERMINOLOGY = "terminology", "upload code systems (operators by default)"


class ApiToken(models.Model):
    """One API token. The plaintext is shown once, at creation; only its keyed hash is kept."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    prefix = models.CharField(max_length=16, db_index=True, help_text="the token's first characters, to recognise it")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list, help_text="what the token may be used for")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="empty: never expires")
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API token"
        ordering = ["-created_at"]
        # For service accounts that operate jobs without being staff (a dashboard): with a `control` token.
        permissions = [("operate", "May act as an operator with a token carrying the control scope")]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

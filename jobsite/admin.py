"""API tokens in the admin: listed by prefix (the plaintext exists only when created), revocable, never shown."""
from django.contrib import admin, messages
from django.db.models.functions import Now

from jobsite.models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "user", "scope_list", "created_at", "expires_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("prefix", "user__username")
    readonly_fields = ("user", "prefix", "scopes", "created_at", "expires_at", "last_used_at", "revoked_at")
    exclude = ("digest",)
    actions = ["revoke"]

    @admin.display(description="scopes")
    def scope_list(self, token: ApiToken) -> str:
        return " ".join(token.scopes)

    def has_add_permission(self, request) -> bool:
        return False  # `manage.py create_api_token` shows the plaintext once; the admin never has it

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke(self, request, queryset) -> None:
        revoked = queryset.filter(revoked_at__isnull=True).update(revoked_at=Now())
        self.message_user(request, f"revoked {revoked} token(s)", messages.SUCCESS)

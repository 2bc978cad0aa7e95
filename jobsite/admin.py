"""API tokens in the admin: listed by prefix (the plaintext exists only when created), revocable, never shown."""

from django.contrib import admin, messages
from django.db.models.functions import Now

from jobsite.display import moment
from jobsite.models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """The list fits 1280 px: no app sidebar, times as the dashboard shows them (today's as a time), a long user
    name wrapped."""

    list_display = ("prefix", "user", "scope_list", "created", "expires", "last_used", "revoked")
    list_filter = ("revoked_at",)
    search_fields = ("prefix", "user__username")
    readonly_fields = ("user", "prefix", "scopes", "created_at", "expires_at", "last_used_at", "revoked_at")
    exclude = ("digest",)
    actions = ["revoke"]

    class Media:
        css = {"all": ["dashboard/dashboard.css"]}
        js = ["dashboard/dashboard.js"]

    @admin.display(description="scopes")
    def scope_list(self, token: ApiToken) -> str:
        return " ".join(token.scopes)

    @admin.display(description="created", ordering="created_at")
    def created(self, token: ApiToken) -> str:
        return moment(token.created_at)

    @admin.display(description="expires", ordering="expires_at")
    def expires(self, token: ApiToken) -> str:
        return moment(token.expires_at) if token.expires_at else "never"

    @admin.display(description="last used", ordering="last_used_at")
    def last_used(self, token: ApiToken) -> str:
        return moment(token.last_used_at) if token.last_used_at else "never"

    @admin.display(description="revoked", ordering="revoked_at")
    def revoked(self, token: ApiToken) -> str:
        return moment(token.revoked_at)

    def has_add_permission(self, request) -> bool:
        return False  # `manage.py create_api_token` shows the plaintext once; the admin never has it

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke(self, request, queryset) -> None:
        revoked = queryset.filter(revoked_at__isnull=True).update(revoked_at=Now())
        self.message_user(request, f"revoked {revoked} token(s)", messages.SUCCESS)

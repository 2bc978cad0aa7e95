"""API token authentication that FHIR clients can use: they send `Authorization: Bearer <token>`."""
from rest_framework.authentication import TokenAuthentication, get_authorization_header


class BearerOrTokenAuthentication(TokenAuthentication):
    """DRF's token auth, accepting both `Token <key>` and `Bearer <key>`."""

    keywords = ("token", "bearer")

    def authenticate(self, request):
        auth = get_authorization_header(request).split()
        if not auth or auth[0].lower().decode(errors="replace") not in self.keywords:
            return None
        if len(auth) != 2:
            return super().authenticate_credentials("")  # raises AuthenticationFailed
        try:
            key = auth[1].decode()
        except UnicodeError:
            return super().authenticate_credentials("")
        return self.authenticate_credentials(key)

    def authenticate_header(self, request) -> str:
        return "Bearer"

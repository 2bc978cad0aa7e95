"""What the tests of the API's tokens and scopes share."""

from __future__ import annotations

from rest_framework.test import APIClient


def with_token(token: str) -> APIClient:
    """A test client that sends this bearer token with every request."""
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return api

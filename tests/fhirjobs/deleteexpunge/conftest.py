"""Fixtures of the delete-expunge tests: FHIR clients of a user allowed to delete-expunge, and of one who is not."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from jobsite.tokens import token_for
from tests.fhirjobs.deleteexpunge.helpers import DELETER_SCOPES
from tests.fhirstore.helpers import FhirClient


@pytest.fixture
def deleter(django_user_model) -> FhirClient:
    """A user granted `deleteexpunge.delete_expunge` (not staff), with a token of fhir:write and admin:delete."""
    user = django_user_model.objects.create_user("deleter")
    user.user_permissions.add(Permission.objects.get(codename="delete_expunge"))
    return FhirClient(f"Bearer {token_for(user, DELETER_SCOPES)}")

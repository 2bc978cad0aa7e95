"""Fixtures of the bulk patch tests: a FHIR client of a user allowed to bulk-patch."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from jobsite.tokens import token_for
from tests.fhirstore.helpers import FhirClient


@pytest.fixture
def patcher(django_user_model) -> FhirClient:
    """A user granted `bulkpatch.bulk_patch` (not staff), with a token of fhir:read and fhir:write."""
    user = django_user_model.objects.create_user("patcher")
    user.user_permissions.add(Permission.objects.get(codename="bulk_patch"))
    return FhirClient(f"Bearer {token_for(user, ['fhir:read', 'fhir:write'])}")

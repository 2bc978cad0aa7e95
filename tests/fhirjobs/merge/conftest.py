"""Fixtures of the merge tests: a FHIR client of a user allowed to merge patients."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from jobsite.tokens import token_for
from tests.fhirstore.helpers import FhirClient


@pytest.fixture
def merger(django_user_model) -> FhirClient:
    """A user granted `merge.merge_patients` (not staff), with a token of fhir:read and fhir:write."""
    user = django_user_model.objects.create_user("merger")
    user.user_permissions.add(Permission.objects.get(codename="merge_patients"))
    return FhirClient(f"Bearer {token_for(user, ['fhir:read', 'fhir:write'])}")

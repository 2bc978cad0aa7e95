"""Fixtures of the terminology tests: clients, the ICD-10-CM slice loaded (helpers are in helpers.py)."""

from __future__ import annotations

import pytest

from jobsite.tokens import token_for
from tests.fhirstore.helpers import FhirClient
from tests.fhirstore.terminology.helpers import load_slice


@pytest.fixture
def uploader(django_user_model) -> FhirClient:
    """A staff user's token: every scope, `terminology` included."""
    user = django_user_model.objects.create_user("terminologist", is_staff=True)
    return FhirClient(f"Bearer {token_for(user)}")


@pytest.fixture
def reader(django_user_model) -> FhirClient:
    user = django_user_model.objects.create_user("reader")
    return FhirClient(f"Bearer {token_for(user, ['fhir:read'])}")


@pytest.fixture
def icd10cm(db) -> int:
    return load_slice()

"""Fixtures of the reindex tests: an operator's FHIR client, jobs run in this process by `bus`."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from jobsite.tokens import token_for
from tests.fhirstore.helpers import FhirClient


@pytest.fixture
def operator(django_user_model) -> FhirClient:
    """A user given the two permissions (not staff): may manage SearchParameters and start reindexes."""
    user = django_user_model.objects.create_user("operator")
    user.user_permissions.add(*Permission.objects.filter(codename__in=["manage_search_parameters", "reindex"]))
    return FhirClient(f"Bearer {token_for(user)}")

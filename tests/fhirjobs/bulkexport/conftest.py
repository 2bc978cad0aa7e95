"""Fixtures of the bulk export tests: export files in a temporary storage, jobs run in this process."""
from __future__ import annotations


import pytest
from jobsite.tokens import token_for

from tests.fhirjobs.bulkexport.helpers import Exporter
from tests.fhirstore.helpers import FhirClient


@pytest.fixture(autouse=True)
def export_storage(settings, tmp_path):
    """Each test writes its export files into its own directory."""
    settings.STORAGES = {**settings.STORAGES, "bulkexport": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path / "exports")}}}
    return tmp_path / "exports"


@pytest.fixture
def exporter(fhir, bus) -> Exporter:
    return Exporter(fhir, bus)


@pytest.fixture
def other_user_client(django_user_model) -> FhirClient:
    user = django_user_model.objects.create_user("someone-else")
    return FhirClient(f"Bearer {token_for(user)}")

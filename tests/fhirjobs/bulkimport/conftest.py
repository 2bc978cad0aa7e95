"""Fixtures of the bulk import tests: a staff client, inputs as file:// URLs under a temporary root or from
local HTTP servers, jobs run in this process by `bus`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jobsite.tokens import token_for
from tests.fhirjobs.bulkimport.helpers import HttpSources, Importer
from tests.fhirstore.helpers import FhirClient


@pytest.fixture(autouse=True)
def file_root(settings, tmp_path) -> Path:
    """Inputs live under tmp_path/inputs, the only place file:// URLs may point to."""
    root = tmp_path / "inputs"
    root.mkdir()
    settings.BULK_IMPORT_FILE_ROOT = str(root)
    return root


@pytest.fixture
def importer_client(django_user_model) -> FhirClient:
    user = django_user_model.objects.create_user("importer", is_staff=True)
    return FhirClient(f"Bearer {token_for(user)}")


@pytest.fixture
def importer(importer_client, bus) -> Importer:
    return Importer(importer_client, bus)


@pytest.fixture
def http_sources() -> Iterator[HttpSources]:
    sources = HttpSources()
    yield sources
    sources.close()

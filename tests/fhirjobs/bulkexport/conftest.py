"""Fixtures of the bulk export tests: export files in the default storage (the database), jobs run in this process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.files.storage import Storage, storages

from jobsite.tokens import token_for
from tests.fhirjobs.bulkexport.helpers import Exporter
from tests.fhirstore.helpers import FhirClient


class StoredFiles:
    """The files of the export storage in use (the default: the database), listed through Django's Storage API."""

    def names(self) -> list[str]:
        return sorted(walk(storages["bulkexport"], ""))


def walk(storage: Storage, directory: str) -> Iterator[str]:
    directories, files = storage.listdir(directory)
    yield from (f"{directory}{name}" for name in files)
    for name in directories:
        yield from walk(storage, f"{directory}{name}/")


@pytest.fixture
def export_storage() -> StoredFiles:
    return StoredFiles()


@pytest.fixture
def exporter(fhir, bus) -> Exporter:
    return Exporter(fhir, bus)


@pytest.fixture
def other_user_client(django_user_model) -> FhirClient:
    user = django_user_model.objects.create_user("someone-else")
    return FhirClient(f"Bearer {token_for(user)}")

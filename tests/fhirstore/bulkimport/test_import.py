"""$import end to end: Synthea NDJSON in, every resource stored with its id, references resolved, counts reported."""
import shutil
from collections import Counter

import pytest

from fhirstore.bulkimport.models import StagedId
from fhirstore.models import Resource, ResourceVersion
from tests.fhirstore.bulkimport.conftest import diagnostics, file_urls
from tests.fhirstore.helpers import SYNTHEA_NDJSON, assert_every_reference_resolves

pytestmark = pytest.mark.django_db(transaction=True)


def stored_counts() -> Counter:
    return Counter(Resource.objects.filter(deleted=False).values_list("resource_type", flat=True))


def file_counts(directory) -> dict[str, int]:
    return {path.name.split(".")[0]: sum(1 for _ in path.open()) for path in directory.glob("*.ndjson")}


@pytest.fixture
def synthea(file_root):
    shutil.copytree(SYNTHEA_NDJSON, file_root / "synthea")
    return file_root / "synthea"


def test_synthea_files_load_completely_with_counts_per_type(importer, synthea, settings):
    settings.BULK_IMPORT_CHUNK_SIZE = 50  # many chunks, conditional targets in chunks of their own

    outcome = importer.run(*reversed(file_urls(synthea)))  # Practitioners last: the order must not matter

    expected = file_counts(synthea)
    assert stored_counts() == expected
    assert_every_reference_resolves()
    total = sum(expected.values())
    assert diagnostics(outcome)[0] == f"Import completed: {total} loaded, 0 unchanged, 0 failed, 0 warnings"
    assert f"Patient: {expected['Patient']} loaded, 0 unchanged, 0 failed" in diagnostics(outcome)
    assert not StagedId.objects.exists()


def test_importing_the_same_files_again_makes_no_new_version(importer, synthea):
    importer.run(*file_urls(synthea))
    bodies = dict(Resource.objects.values_list("logical_id", "body"))

    outcome = importer.run(*file_urls(synthea))

    total = sum(file_counts(synthea).values())
    assert diagnostics(outcome)[0] == f"Import completed: 0 loaded, {total} unchanged, 0 failed, 0 warnings"
    assert not ResourceVersion.objects.exists()
    assert set(Resource.objects.values_list("version_id", flat=True)) == {1}
    assert dict(Resource.objects.values_list("logical_id", "body")) == bodies


def test_the_purge_drops_staged_ids_of_imports_that_ended_without_a_report_and_imports_batch_forgot(
        importer, synthea):
    from datetime import timedelta

    from django.utils import timezone

    from batch import control
    from batch.models import JobInstance
    from fhirstore.bulkimport.models import BulkImport
    from fhirstore.bulkimport.services import purge_ended_imports

    importer.kick_off(*file_urls(synthea))
    importer.bus.deliver_next()  # fetch-files: ids staged
    assert StagedId.objects.exists()
    control.cancel_job(BulkImport.objects.get().job_instance_id)  # cancelled: no report step drops them
    importer.bus.drain()

    assert purge_ended_imports().staged_ids == 0  # kept a day, for a restart
    assert purge_ended_imports(now=timezone.now() + timedelta(days=2)).staged_ids > 0
    assert not StagedId.objects.exists()
    BulkImport.objects.all().delete()

    importer.run(*file_urls(synthea))
    JobInstance.objects.all().delete()  # what batch's own purge does after BATCH_PURGE_ENDED_AFTER_DAYS
    assert purge_ended_imports().imports == 1 and not BulkImport.objects.exists()

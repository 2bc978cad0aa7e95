"""$import end to end: Synthea NDJSON in, every resource stored with its id, references resolved, counts reported."""

import shutil
from collections import Counter

import pytest

from fhirjobs.bulkimport.models import LoadSummary, StagedId
from fhirstore.models import Resource, ResourceVersion
from tests.fhirjobs.bulkimport.helpers import diagnostics, file_urls
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


def test_each_input_is_fetched_by_a_chunk_of_its_own_and_every_id_is_staged_before_any_load(
    importer, synthea, settings
):
    from batch import control
    from fhirjobs.bulkimport.models import BulkImport

    settings.BULK_IMPORT_CHUNK_SIZE = 50
    urls = file_urls(synthea)
    importer.kick_off(*urls)
    job_id = BulkImport.objects.get().job_instance_id
    while control.get_job(job_id).current_step != "load-resources":
        importer.bus.deliver_next()

    job = control.get_job(job_id)
    assert job.step("fetch-files").total == job.step("fetch-files").done == len(urls)
    expected = file_counts(synthea)
    assert job.step("load-resources").total == sum(-(-count // 50) for count in expected.values())
    assert StagedId.objects.count() == sum(expected.values()) and not Resource.objects.exists()
    importer.bus.drain()
    assert stored_counts() == expected
    assert control.get_job(job_id).step("load-deferred").total == 0  # no chunk deferred a line: none to run


def test_an_import_started_as_version_1_still_completes(importer, synthea):
    """Version 1 (every input split by one chunk) stays registered for imports running when version 2 came."""
    from batch import control
    from batch.models import JobInstance, WorkChunk
    from fhirjobs.bulkimport.models import BulkImport

    response = importer.kick_off(*file_urls(synthea))
    job_id = BulkImport.objects.get().job_instance_id
    JobInstance.objects.filter(id=job_id).update(definition_version=1, current_gated_step_id="fetch-files")
    WorkChunk.objects.filter(instance_id=job_id, target_step_id="list-files").update(target_step_id="fetch-files")

    outcome = importer.finish(response["Content-Location"])

    assert control.get_job(job_id).step("fetch-files").total == 1
    total = sum(file_counts(synthea).values())
    assert diagnostics(outcome)[0] == f"Import completed: {total} loaded, 0 unchanged, 0 failed, 0 warnings"


def test_the_purge_drops_staged_ids_and_load_summaries_of_imports_that_ended_without_a_report_and_imports_batch_forgot(
    importer, synthea
):
    from datetime import timedelta

    from django.utils import timezone

    from batch import control
    from batch.models import JobInstance
    from fhirjobs.bulkimport.models import BulkImport
    from fhirjobs.bulkimport.services import purge_ended_imports

    importer.kick_off(*file_urls(synthea))
    job_id = BulkImport.objects.get().job_instance_id
    while control.get_job(job_id).current_step != "load-resources":
        importer.bus.deliver_next()  # list-files, then fetch-files: ids staged
    importer.bus.deliver_next()  # a load chunk: its counts kept for the report
    assert StagedId.objects.exists() and LoadSummary.objects.exists()
    control.cancel_job(BulkImport.objects.get().job_instance_id)  # cancelled: no report step drops them
    importer.bus.drain()

    assert purge_ended_imports().staged_ids == 0  # kept a day, for a restart
    purged = purge_ended_imports(now=timezone.now() + timedelta(days=2))
    assert purged.staged_ids > 0 and purged.load_summaries > 0
    assert not StagedId.objects.exists() and not LoadSummary.objects.exists()
    BulkImport.objects.all().delete()

    importer.run(*file_urls(synthea))
    JobInstance.objects.all().delete()  # what batch's own purge does after BATCH_PURGE_ENDED_AFTER_DAYS
    purged = purge_ended_imports()
    assert purged.imports == 1 and purged.load_summaries > 0 and not BulkImport.objects.exists()

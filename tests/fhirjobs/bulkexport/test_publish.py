"""`$bulk-publish`: a named export refreshed every cadence by a scheduled job, served as a static manifest with an
ETag (304 on `If-None-Match`), paged, swapped atomically, its files readable by any exporter and never purged
while published."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from fhirjobs.bulkexport.models import BulkExport, ExportFile, Publication
from fhirjobs.bulkexport.publish import refresh_publications
from fhirjobs.bulkexport.services import purge_expired_exports
from jobsite.tokens import token_for
from tests.fhirjobs.helpers import patient
from tests.fhirstore.helpers import FhirClient, assert_outcome, store

pytestmark = pytest.mark.django_db(transaction=True)

HOUR = 3600


@pytest.fixture(autouse=True)
def directory(settings):
    settings.BULK_PUBLISH = {"directory": {"parameters": "_type=Patient", "cadence_seconds": HOUR}}
    store(patient("p1"), patient("p2"))


@pytest.fixture
def reader(django_user_model) -> FhirClient:
    """Any user with the export scope: a publication is not one user's."""
    return FhirClient(f"Bearer {token_for(django_user_model.objects.create_user('reader'), ['export'])}")


def publish(bus, now=None) -> None:
    """Two ticks of the scheduled job around the export's run: start it, then swap it in."""
    refresh_publications(now=now)
    bus.drain()
    refresh_publications(now=now)


def test_nothing_is_served_before_the_first_refresh_has_completed(reader, bus):
    assert_outcome(reader.get("/fhir/$bulk-publish"), 404, "has not been published yet")
    refresh_publications()
    assert_outcome(reader.get("/fhir/$bulk-publish?name=directory"), 404, "has not been published yet")
    assert_outcome(reader.get("/fhir/$bulk-publish?name=formulary"), 404, "No publication named 'formulary'")


def test_the_published_manifest_lists_the_files_any_exporter_may_download(reader, bus):
    publish(bus)

    response = reader.get("/fhir/$bulk-publish")

    assert response.status_code == 200, response.content
    manifest = response.json()
    assert manifest["manifestType"] == "http://hl7.org/fhir/uv/bulkdata/StructureDefinition/BulkPublishManifest"
    assert manifest["updateCadence"] == "PT3600S" and manifest["outcome"] == [] and "request" not in manifest
    [entry] = manifest["output"]
    assert entry["type"] == "Patient" and entry["count"] == 2
    assert entry["url"].startswith("http://testserver/fhir/$bulk-publish-file/")
    download = reader.get(entry["url"])
    assert download.status_code == 200 and download["Content-Type"] == "application/fhir+ndjson"
    assert len(b"".join(download.streaming_content).splitlines()) == 2
    assert response["ETag"] and response["Cache-Control"].startswith("private, max-age=")


def test_if_none_match_with_the_etag_is_304_until_the_next_swap(reader, bus):
    publish(bus)
    etag = reader.get("/fhir/$bulk-publish")["ETag"]

    unchanged = reader.get("/fhir/$bulk-publish", HTTP_IF_NONE_MATCH=etag)

    assert unchanged.status_code == 304 and unchanged["ETag"] == etag and unchanged.content == b""
    store(patient("p3"))
    publish(bus, now=timezone.now() + timedelta(seconds=HOUR + 1))
    changed = reader.get("/fhir/$bulk-publish", HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed["ETag"] != etag
    assert changed.json()["output"][0]["count"] == 3


def test_a_304_is_answered_from_the_publication_row_without_reading_the_file_rows(reader, bus):
    publish(bus)
    etag = reader.get("/fhir/$bulk-publish")["ETag"]

    with CaptureQueriesContext(connection) as queries:
        unchanged = reader.get("/fhir/$bulk-publish", HTTP_IF_NONE_MATCH=etag)

    assert unchanged.status_code == 304
    assert not [query["sql"] for query in queries if ExportFile._meta.db_table in query["sql"]]


def test_the_old_manifest_is_served_until_the_refresh_completes_and_its_files_stay_for_a_grace_period(reader, bus):
    publish(bus)
    old = reader.get("/fhir/$bulk-publish").json()
    later = timezone.now() + timedelta(seconds=HOUR + 1)

    refresh_publications(now=later)  # the next export starts
    assert reader.get("/fhir/$bulk-publish").json() == old
    bus.drain()
    refresh_publications(now=later)  # and is swapped in

    assert reader.get("/fhir/$bulk-publish").json() != old
    assert reader.get(old["output"][0]["url"]).status_code == 200  # within BULK_EXPORT_RETENTION_SECONDS
    purge_expired_exports(now=timezone.now() + timedelta(days=30))
    assert_outcome(reader.get(old["output"][0]["url"]), 404)


def test_a_refresh_before_the_cadence_starts_nothing(bus):
    publish(bus)

    assert refresh_publications(now=timezone.now() + timedelta(seconds=HOUR - 60)) == []
    assert BulkExport.objects.count() == 1


def test_the_published_export_is_never_purged_while_published(reader, bus):
    publish(bus)
    published = Publication.objects.get().export_id

    purge_expired_exports(now=timezone.now() + timedelta(days=30))

    assert BulkExport.objects.filter(id=published).exists()


def test_a_long_manifest_is_paged_by_next_links(reader, bus, settings):
    settings.BULK_EXPORT_CHUNK_SIZE = 1  # a file per patient
    settings.BULK_EXPORT_MANIFEST_PAGE_FILES = 1
    publish(bus)

    first = reader.get("/fhir/$bulk-publish").json()
    second = reader.get(first["link"][0]["url"])

    assert first["link"][0]["url"] == "http://testserver/fhir/$bulk-publish?page=2"
    assert second.status_code == 200 and "link" not in second.json()
    assert first["output"][0]["url"] != second.json()["output"][0]["url"]
    assert_outcome(reader.get("/fhir/$bulk-publish?page=3"), 404)


def test_only_published_files_are_served_by_the_publish_file_route(reader, exporter, bus):
    manifest = exporter.export("/fhir/$export?_type=Patient")
    private_file = manifest["output"][0]["url"].rsplit("/", 1)[1]

    assert_outcome(reader.get(f"/fhir/$bulk-publish-file/{private_file}"), 404)
    assert_outcome(reader.get("/fhir/$bulk-publish-file/not-a-uuid"), 404)


def test_a_bad_publication_is_logged_and_leaves_the_others_alone(settings, bus, reader):
    settings.BULK_PUBLISH = {
        "broken": {"parameters": "_type=NotAType"},
        "directory": {"parameters": "_type=Patient", "cadence_seconds": HOUR},
    }

    done = refresh_publications()

    assert any("broken" in line and "NotAType" in line for line in done)
    bus.drain()
    refresh_publications()
    assert reader.get("/fhir/$bulk-publish?name=directory").status_code == 200

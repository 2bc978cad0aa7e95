"""`allowPartialManifests` (Bulk Data STU3): while the export runs the status URL answers 202 with a manifest of
the files written so far; a manifest once returned never changes but for a `link` to the next one, which lists
what was written after; at the end every file is on exactly one page of the chain."""

import pytest

from batch.models import JobInstance
from fhirjobs.bulkexport.models import BulkExport, ExportFile
from tests.fhirjobs.bulkexport.helpers import observation
from tests.fhirjobs.helpers import patient
from tests.fhirstore.helpers import assert_outcome, store

pytestmark = pytest.mark.django_db(transaction=True)

PARTIAL = "/fhir/$export?_type=Patient,Observation&allowPartialManifests=true"


@pytest.fixture(autouse=True)
def resources(settings):
    settings.BULK_EXPORT_CHUNK_SIZE = 2  # a file per two resources: several files, written one after another
    store(*(patient(f"p{n}") for n in range(4)))
    store(*(observation(f"o{n}", "p0") for n in range(6)))


def poll(exporter, url: str):
    response = exporter.fhir.get(url)
    assert response.status_code in (200, 202), response.content
    return response


def chain(exporter, url: str) -> list[dict]:
    """Every page of a manifest, following `next` links."""
    pages = []
    while url:
        pages.append(poll(exporter, url).json())
        url = next((link["url"] for link in pages[-1].get("link", []) if link["relation"] == "next"), None)
    return pages


def without_link(manifest: dict) -> dict:
    return {key: value for key, value in manifest.items() if key != "link"}


def test_while_running_the_status_lists_the_files_written_so_far_and_they_can_be_downloaded(exporter):
    status_url = exporter.kick_off(PARTIAL)["Content-Location"]
    while not ExportFile.objects.exists():
        exporter.bus.deliver_next()

    response = poll(exporter, status_url)

    assert response.status_code == 202 and response["Content-Type"] == "application/json"
    assert response["X-Progress"] and response["Retry-After"]
    manifest = response.json()
    assert manifest["requiresAccessToken"] is True and manifest["request"].endswith(PARTIAL)
    assert [entry["count"] for entry in manifest["output"]] == [file.count for file in ExportFile.objects.all()]
    assert "link" not in manifest
    assert sum(len(resources) for resources in exporter.download(manifest).values()) == ExportFile.objects.get().count


def test_a_served_page_never_changes_but_for_a_next_link_to_what_was_written_after(exporter):
    status_url = exporter.kick_off(PARTIAL)["Content-Location"]
    while not ExportFile.objects.exists():
        exporter.bus.deliver_next()
    first = poll(exporter, status_url).json()
    while ExportFile.objects.count() < 2:
        exporter.bus.deliver_next()

    again = poll(exporter, status_url).json()
    second = poll(exporter, again["link"][0]["url"]).json()

    assert without_link(again) == first
    assert again["link"] == [{"relation": "next", "url": f"{status_url}&page=2"}]
    assert {entry["url"] for entry in second["output"]}.isdisjoint(entry["url"] for entry in first["output"])
    assert {key: value for key, value in second.items() if key not in ("output", "link")} == {
        key: value for key, value in first.items() if key != "output"
    }


def test_at_the_end_the_chain_lists_every_file_once_and_the_first_page_is_unchanged(exporter):
    status_url = exporter.kick_off(PARTIAL)["Content-Location"]
    while not ExportFile.objects.exists():
        exporter.bus.deliver_next()
    first = poll(exporter, status_url).json()
    exporter.bus.drain()

    final = exporter.fhir.get(status_url)
    pages = chain(exporter, status_url)

    assert final.status_code == 200 and final["Expires"]
    assert without_link(pages[0]) == first
    urls = [entry["url"] for page in pages for entry in page["output"]]
    assert len(urls) == len(set(urls)) == ExportFile.objects.count()
    report = JobInstance.objects.get().report
    assert sorted(urls) == sorted(entry["url"] for entry in report["output"])
    downloaded = [exporter.download(page) for page in pages]
    assert sorted(
        resource["id"] for files in downloaded for resources in files.values() for resource in resources
    ) == sorted([f"p{n}" for n in range(4)] + [f"o{n}" for n in range(6)])


def test_a_long_list_of_files_is_paged_by_manifest_page_files(exporter, settings):
    settings.BULK_EXPORT_MANIFEST_PAGE_FILES = 2
    status_url = exporter.kick_off(PARTIAL)["Content-Location"]
    exporter.bus.drain()

    pages = chain(exporter, status_url)

    assert [len(page["output"]) for page in pages] == [2, 2, 1]  # 4 Patients and 6 Observations, 2 a file
    assert [page.get("link", [{}])[0].get("url") for page in pages] == [
        f"{status_url}&page=2",
        f"{status_url}&page=3",
        None,
    ]


def test_before_any_file_is_written_the_status_is_a_plain_202(exporter):
    status_url = exporter.kick_off(PARTIAL)["Content-Location"]

    response = exporter.fhir.get(status_url)

    assert response.status_code == 202 and response.content == b""
    assert BulkExport.objects.get().manifest_pages == 0


def test_an_export_with_nothing_to_list_completes_with_one_empty_page(exporter):
    status_url = exporter.kick_off("/fhir/$export?_type=Device&allowPartialManifests=true")["Content-Location"]
    exporter.bus.drain()

    [page] = chain(exporter, status_url)
    assert (page["output"], page["deleted"], "link" in page) == ([], [], False)


def test_without_allow_partial_manifests_the_status_has_one_page(exporter):
    status_url = exporter.kick_off("/fhir/$export?_type=Patient")["Content-Location"]
    while not ExportFile.objects.exists():
        exporter.bus.deliver_next()

    assert exporter.fhir.get(status_url).content == b""  # running: no manifest
    exporter.bus.drain()
    assert "link" not in poll(exporter, status_url).json()
    assert_outcome(exporter.fhir.get(f"{status_url}&page=2"), 404, "not kicked off with allowPartialManifests")


@pytest.mark.parametrize("page, status", [("0", 400), ("two", 400), ("3", 404)])
def test_a_page_that_does_not_exist_is_refused(exporter, page, status):
    status_url = exporter.kick_off(PARTIAL)["Content-Location"]
    exporter.bus.drain()

    assert_outcome(exporter.fhir.get(f"{status_url}&page={page}"), status)


def test_allow_partial_manifests_takes_true_or_false(exporter):
    assert_outcome(
        exporter.kick_off("/fhir/$export?allowPartialManifests=yes"),
        400,
        "allowPartialManifests takes one value, true or false",
    )
    response = exporter.kick_off_post("/fhir/$export", [{"name": "allowPartialManifests", "valueBoolean": True}])
    assert response.status_code == 202, response.content
    assert BulkExport.objects.get().partial_manifests is True
    exporter.kick_off("/fhir/$export?_type=Patient&allowPartialManifests=false")
    assert BulkExport.objects.filter(partial_manifests=False).count() == 1

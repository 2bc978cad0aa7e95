"""transactionTime means "everything up to it": an export reads the store as it was then, whatever is written
while it runs; a write that commits late is in the next `_since` export; deletions are listed under `deleted`."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise

import pytest
from django.db import connection, transaction

from fhirjobs.bulkexport.steps import fetch_resources
from fhirstore.authority import SERVER
from fhirstore.models import Resource, ResourceVersion
from fhirstore.storage import Write, delete_resource, save_resources, settled_time
from tests.fhirjobs.bulkexport.helpers import observation
from tests.fhirjobs.helpers import patient
from tests.fhirstore.helpers import delete, store

pytestmark = pytest.mark.django_db(transaction=True)


def kick_off(exporter, path: str) -> str:
    response = exporter.kick_off(path)
    assert response.status_code == 202, response.content
    return response["Content-Location"]


def test_an_export_holds_the_store_as_it_was_at_its_transaction_time(exporter):
    store(patient("p1"), patient("p2"), patient("p3"))
    status_url = kick_off(exporter, "/fhir/$export?_type=Patient")
    later = datetime.fromisoformat(_transaction_time(status_url)) + timedelta(seconds=1)
    store(patient("p1", gender="female"), patient("p4"), at=later)
    with transaction.atomic():
        delete_resource("Patient", "p2", now=later, authority=SERVER)

    downloaded = exporter.download(exporter.finish(status_url))

    assert {resource["id"]: resource["meta"]["versionId"] for resource in downloaded["Patient"]} == {
        "p1": "1",
        "p2": "1",
        "p3": "1",
    }
    assert "gender" not in next(resource for resource in downloaded["Patient"] if resource["id"] == "p1")


def store_a_group_then_kick_off(exporter, path: str) -> str:
    """A Group of p1 and p2 and Observations of p1; after the kick-off (the job still waiting for a worker), one
    Observation deleted, another moved to p2 then deleted: their index rows are gone when the walk reads them."""
    store(patient("p1"), patient("p2"))
    store(
        {
            "resourceType": "Group",
            "id": "g1",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": "Patient/p1"}}, {"entity": {"reference": "Patient/p2"}}],
        },
        observation("o-kept", "p1"),
        observation("o-deleted", "p1"),
        observation("o-moved", "p1"),
    )
    status_url = kick_off(exporter, path)
    later = datetime.fromisoformat(_transaction_time(status_url)) + timedelta(seconds=1)
    store(observation("o-moved", "p2"), at=later)
    with transaction.atomic():
        delete_resource("Observation", "o-deleted", now=later, authority=SERVER)
        delete_resource("Observation", "o-moved", now=later + timedelta(seconds=1), authority=SERVER)
    return status_url


@pytest.mark.parametrize("path", ["/fhir/$export", "/fhir/Patient/$export", "/fhir/Group/g1/$export"])
def test_a_resource_deleted_after_the_kick_off_is_exported_in_its_version_of_then_at_every_level(exporter, path):
    status_url = store_a_group_then_kick_off(exporter, f"{path}?_type=Patient,Observation")

    downloaded = exporter.download(exporter.finish(status_url))

    assert sorted(resource["id"] for resource in downloaded["Patient"]) == ["p1", "p2"]
    assert {
        resource["id"]: (resource["meta"]["versionId"], resource["subject"]["reference"])
        for resource in downloaded["Observation"]
    } == {"o-kept": ("1", "Patient/p1"), "o-deleted": ("1", "Patient/p1"), "o-moved": ("1", "Patient/p1")}


@pytest.mark.parametrize("path", ["/fhir/$export", "/fhir/Patient/$export", "/fhir/Group/g1/$export"])
def test_blocks_hold_a_resource_deleted_after_the_kick_off_in_its_compartment_of_then(exporter, path):
    status_url = store_a_group_then_kick_off(exporter, f"{path}?organizeOutputBy=Patient&_type=Patient,Observation")

    [file] = exporter.finish(status_url)["output"]

    lines = [json.loads(line) for line in b"".join(exporter.fhir.get(file["url"]).streaming_content).splitlines()]
    assert [
        f"{line['resourceType']}/{line['id']}/{line['meta']['versionId']}"
        for line in lines
        if line["resourceType"] != "Parameters"
    ] == ["Patient/p1/1", "Observation/o-deleted/1", "Observation/o-kept/1", "Observation/o-moved/1", "Patient/p2/1"]


def test_a_since_export_lists_what_was_deleted_since_as_transaction_bundles(exporter):
    store(patient("kept"), patient("gone"), patient("old-gone"))
    delete("Patient", "old-gone")
    since = settled_time()
    delete("Patient", "gone")
    store(patient("new"))

    manifest = exporter.export(f"/fhir/$export?_type=Patient&_since={since.isoformat().replace('+', '%2B')}")

    assert exporter.ids(manifest) == {"Patient": ["new"]}
    [deleted] = manifest["deleted"]
    assert (deleted["type"], deleted["count"]) == ("Bundle", 1)
    bundle = json.loads(b"".join(exporter.fhir.get(deleted["url"]).streaming_content))
    assert bundle == {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": "Patient/gone"}}],
    }


def test_a_write_that_commits_after_the_kick_off_is_in_the_next_since_export_not_lost(exporter):
    store(patient("early"))
    writing, kicked_off = threading.Event(), threading.Event()

    def slow_writer():
        try:
            with transaction.atomic():
                save_resources([Write(patient("slow"))], authority=SERVER)
                writing.set()
                kicked_off.wait(timeout=60)
        finally:
            connection.close()

    writer = threading.Thread(target=slow_writer)
    writer.start()
    assert writing.wait(timeout=30)
    first_status = kick_off(exporter, "/fhir/$export?_type=Patient")
    kicked_off.set()
    writer.join(timeout=60)
    first = exporter.finish(first_status)
    second = exporter.export(f"/fhir/$export?_type=Patient&_since={first['transactionTime'].replace('+', '%2B')}")

    assert exporter.ids(first) == {"Patient": ["early"]}  # "slow" is stamped with its start, after transactionTime
    assert exporter.ids(second) == {"Patient": ["slow"]}


@pytest.mark.parametrize("observations", [0, 21], ids=["row ranges of the whole store", "pages of Patient ids"])
def test_a_rerun_fetch_emits_exactly_the_pages_of_the_first_run_whatever_was_written_since(
    exporter, settings, observations
):
    settings.BULK_EXPORT_CHUNK_SIZE = 2
    store(*(patient(f"p{n}") for n in range(7)))
    store(*(observation(f"o{n}", "p0") for n in range(observations)))  # they make Patient a minority of the rows
    status_url = kick_off(exporter, "/fhir/$export?_type=Patient")
    parameters = _job_parameters(status_url)

    first = _run_fetch(parameters)
    later = datetime.fromisoformat(parameters["transaction_time"]) + timedelta(seconds=1)
    store(patient("p0a"), patient("p3", gender="male"), at=later)
    with transaction.atomic():
        delete_resource("Patient", "p1", now=later, authority=SERVER)
    again = _run_fetch(parameters)

    assert again == first and len(_pages(first)) == 4


def test_a_whole_store_walk_cuts_its_first_range_narrow_and_packs_its_ranges_and_a_version_3_export_walks_as_before(
    exporter, settings
):
    """Version 4 lists its first file sooner (a narrow first range, written first; one expand chunk for the gate to
    wait for, not one per 8 ranges); an export started as version 3 walks as version 3 did, so its rerun fetch
    emits the pages its first run did."""
    settings.BULK_EXPORT_CHUNK_SIZE = 4
    store(*(patient(f"p{n}") for n in range(40)))
    parameters = _job_parameters(kick_off(exporter, "/fhir/$export"))
    assert parameters["row_ranges"] and parameters["pages_per_chunk"] == 128

    narrow = _run_fetch({**parameters, "first_range_rows": 1})
    version_3 = _run_fetch({name: value for name, value in parameters.items() if name not in VERSION_4_PARAMETERS})

    assert len(narrow) == 1 and [last - after for after, last in narrow[0]["row_ranges"]] == [1] + [4] * 9 + [3]
    assert [len(chunk["row_ranges"]) for chunk in version_3] == [8, 2]
    assert {last - after for after, last in _pages(version_3)} == {4}
    for chunks in (narrow, version_3):  # the same rows, each once
        ranges = _pages(chunks)
        assert all(previous[1] == following[0] for previous, following in pairwise(ranges))
        assert (ranges[0][0], ranges[-1][1]) == (_pages(version_3)[0][0], _pages(version_3)[-1][1])


def test_an_export_organized_by_patient_packs_its_pages_into_one_fetch_chunk_and_a_version_3_one_emits_one_a_chunk(
    exporter, settings
):
    """Each fetch chunk costs an `expand` chunk the gate waits for before any file is written: version 4 packs
    the pages of patients (`expand` splits them into a write chunk each); version 3 walks as it did."""
    settings.BULK_EXPORT_PATIENTS_PER_FILE = 2
    store(*(patient(f"p{n}") for n in range(5)))
    parameters = _job_parameters(kick_off(exporter, "/fhir/$export?organizeOutputBy=Patient"))

    packed = _run_fetch(parameters)
    version_3 = _run_fetch({name: value for name, value in parameters.items() if name not in VERSION_4_PARAMETERS})

    pages = [["p0", "p1"], ["p2", "p3"], ["p4"]]
    assert [[_patients(page) for page in chunk["patient_pages"]] for chunk in packed] == [pages]
    assert [_patients(chunk["patients_zlib"]) for chunk in version_3] == pages


def _patients(packed: str) -> list[str]:
    from fhirjobs.common.chunks import unpack

    return unpack(packed).decode().split("\n")


VERSION_4_PARAMETERS = ("pages_per_chunk", "first_range_rows")


def _pages(chunks: list[dict]) -> list:
    """Pages of ids, or row ranges (several to a fetch chunk)."""
    return [page for chunk in chunks for page in chunk.get("row_ranges", [chunk])]


def test_a_system_export_and_a_since_export_while_another_writer_runs_hold_every_version_of_the_end(exporter, settings):
    """Together they hold every resource in the version it had at the second's transactionTime, once each."""
    settings.BULK_EXPORT_CHUNK_SIZE = 7
    store(*(patient(f"seed-{n:02}") for n in range(30)))
    stop = threading.Event()
    writes = Counter()

    def writer():
        try:
            n = 0
            while not stop.is_set():
                n += 1
                with transaction.atomic():
                    save_resources(
                        [
                            Write(patient(f"seed-{n % 30:02}", gender="other" if n % 2 else "unknown")),
                            Write(patient(f"new-{n:04}")),
                        ],
                        authority=SERVER,
                    )
                if n % 5 == 0:
                    delete("Patient", f"new-{n - 3:04}")
                writes["batches"] += 1
        finally:
            connection.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        first = exporter.export("/fhir/$export?_type=Patient")
        second = exporter.export(f"/fhir/$export?_type=Patient&_since={first['transactionTime'].replace('+', '%2B')}")
    finally:
        stop.set()
        thread.join(timeout=60)

    assert writes["batches"] > 0
    end = datetime.fromisoformat(second["transactionTime"])
    exported: dict[str, str] = {}
    for manifest in (first, second):
        resources = exporter.download(manifest).get("Patient", [])
        assert len(resources) == len({resource["id"] for resource in resources}), "once per export"
        for resource in resources:
            if resource["meta"]["lastUpdated"] >= exported.get(resource["id"], ("", ""))[1]:
                exported[resource["id"]] = (resource["meta"]["versionId"], resource["meta"]["lastUpdated"])
    deleted_since = {
        entry["request"]["url"].split("/")[1]
        for file in second["deleted"]
        for line in b"".join(exporter.fhir.get(file["url"]).streaming_content).splitlines()
        for entry in json.loads(line)["entry"]
    }
    at_the_end = _versions_at(end)
    assert {
        logical_id: version for logical_id, (version, _) in exported.items() if logical_id not in deleted_since
    } == at_the_end


def _versions_at(moment: datetime) -> dict[str, str]:
    """Each Patient's version at `moment`, if it was live then: the oracle, read straight from the tables."""
    versions: dict[str, tuple[int, bool]] = {}
    rows = [
        *Resource.objects.filter(resource_type="Patient", last_updated__lte=moment).values_list(
            "logical_id", "version_id", "deleted"
        ),
        *ResourceVersion.objects.filter(resource__resource_type="Patient", last_updated__lte=moment).values_list(
            "resource__logical_id", "version_id", "deleted"
        ),
    ]
    for logical_id, version_id, deleted in rows:
        if version_id > versions.get(logical_id, (0, False))[0]:
            versions[logical_id] = (version_id, deleted)
    return {logical_id: str(version_id) for logical_id, (version_id, deleted) in versions.items() if not deleted}


def _transaction_time(status_url: str) -> str:
    return _job_parameters(status_url)["transaction_time"]


def _job_parameters(status_url: str) -> dict:
    from batch.control import get_job
    from fhirjobs.bulkexport.models import BulkExport

    export = BulkExport.objects.get(id=status_url.rsplit("=", 1)[1])
    return dict(get_job(export.job_instance_id).parameters)


@dataclass
class _Sink:
    emitted: list[dict] = field(default_factory=list)

    def accept(self, data) -> None:
        self.emitted.append(dict(data))


@dataclass
class _Context:
    parameters: dict
    instance_id: uuid.UUID = field(default_factory=uuid.uuid4)
    step_id: str = "fetch-resources"
    chunk_id: uuid.UUID = field(default_factory=uuid.uuid4)
    data: None = None

    def is_cancelled(self) -> bool:
        return False

    def check_cancelled(self) -> None:
        pass

    def add_warning(self, message: str) -> None:
        pass


def _run_fetch(parameters: dict) -> list[dict]:
    """The fetch step as the export's own job runs it (a job writes only the export it was started for)."""
    from fhirjobs.bulkexport.models import BulkExport

    sink = _Sink()
    job_id = BulkExport.objects.get(id=parameters["export_id"]).job_instance_id
    fetch_resources(_Context(parameters, instance_id=job_id), sink)
    return sink.emitted


def deleted_urls(exporter, manifest: dict) -> list[str]:
    """The `Type/id` of every DELETE the manifest's `deleted` files list."""
    urls = []
    for deleted in manifest["deleted"]:
        for line in b"".join(exporter.fhir.get(deleted["url"]).streaming_content).decode().splitlines():
            urls.extend(entry["request"]["url"] for entry in json.loads(line)["entry"])
    return sorted(urls)


def test_patient_and_group_since_exports_list_the_deletions_in_their_compartments_by_the_last_version(exporter):
    store(
        patient("p1"),
        patient("p2"),
        patient("outsider"),
        {
            "resourceType": "Group",
            "id": "g1",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": "Patient/p1"}}],
        },
    )
    store(
        observation("o1", "p1"),
        observation("o2", "p2"),
        observation("o3", "ghost"),
        observation("moved", "p1"),
        observation("before", "p1"),
    )
    delete("Observation", "before")
    since = settled_time()
    store(observation("moved", "p2"))  # its last version before the deletion is in p2's compartment, not p1's
    for resource_type, logical_id in [
        ("Observation", "o1"),
        ("Observation", "o2"),
        ("Observation", "o3"),
        ("Observation", "moved"),
        ("Patient", "outsider"),
    ]:
        delete(resource_type, logical_id)
    after = f"_since={since.isoformat().replace('+', '%2B')}"

    group = exporter.export(f"/fhir/Group/g1/$export?{after}")
    listed = exporter.finish(
        exporter.kick_off_post(
            f"/fhir/Patient/$export?{after}", [{"name": "patient", "valueReference": {"reference": "Patient/p2"}}]
        )["Content-Location"]
    )
    every_patient = exporter.export(f"/fhir/Patient/$export?{after}")

    assert deleted_urls(exporter, group) == ["Observation/o1"]
    assert deleted_urls(exporter, listed) == ["Observation/moved", "Observation/o2"]
    assert deleted_urls(exporter, every_patient) == [
        "Observation/moved",
        "Observation/o1",
        "Observation/o2",
        "Observation/o3",
        "Patient/outsider",
    ]


LABORATORY = "_typeFilter=Observation%3Fcategory%3Dlaboratory"


@pytest.mark.parametrize(
    "path",
    [
        "/fhir/Group/g1/$export?_type=Observation",
        f"/fhir/Patient/$export?_type=Observation&{LABORATORY}",
        f"/fhir/$export?_type=Observation&{LABORATORY}",
    ],
    ids=["group compartments", "patient level, type filter", "system level, type filter"],
)
def test_a_rerun_fetch_after_index_rows_changed_keeps_its_pages_so_no_resource_is_lost_or_doubled(
    exporter, settings, path
):
    """A lost fetch's rerun judges compartments and `_typeFilter`s by the index rows of its own time: resources
    that moved into or out of the selection since the first run (after transactionTime) must not shift the pages
    of the others, whichever emitted pages of the first run the engine kept (it keeps those by emission index)."""
    settings.BULK_EXPORT_CHUNK_SIZE = 2
    store(
        patient("p0"),
        patient("outsider"),
        {
            "resourceType": "Group",
            "id": "g1",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": "Patient/p0"}}],
        },
    )
    store(*(observation(f"o{n}", "p0") for n in range(10)), observation("o5-in", "outsider"))
    parameters = _job_parameters(kick_off(exporter, path))

    first = _run_fetch(parameters)
    later = datetime.fromisoformat(parameters["transaction_time"]) + timedelta(seconds=1)
    store(
        observation("o1", "outsider"),
        observation("o3", "p0", category="vital-signs"),
        observation("o5-in", "p0"),
        at=later,
    )  # out of the compartment, out of the filter, into the compartment
    again = _run_fetch(parameters)

    assert len(again) == len(first)
    untouched = {f"o{n}" for n in range(10)} - {"o1", "o3"}
    for flushed in range(len(first) + 1):  # the first run's pages the engine had when its worker was lost
        kept = Counter(logical_id for chunk in first[:flushed] + again[flushed:] for logical_id in _chunk_ids(chunk))
        assert max(kept.values()) == 1, f"after {flushed} pages: {kept}"
        assert untouched <= set(kept), f"after {flushed} pages: {sorted(untouched - set(kept))} lost"


def _chunk_ids(chunk: dict) -> list[str]:
    from fhirjobs.common.chunks import unpack

    text = unpack(chunk["ids_zlib"]).decode()
    return text.split("\n") if text else []


def group(*members: str) -> dict:
    return {
        "resourceType": "Group",
        "id": "g1",
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": f"Patient/{member}"}} for member in members],
    }


def store_members_then_kick_off(exporter, query: str) -> tuple[str, datetime]:
    """A Group of p1 and p2 (p3 stored beside it), an Observation of each; the kick-off of a Group export, the job
    still waiting for a worker; and an instant after it."""
    store(patient("p1"), patient("p2"), patient("p3"))
    store(group("p1", "p2"), observation("o1", "p1"), observation("o2", "p2"), observation("o3", "p3"))
    status_url = kick_off(exporter, f"/fhir/Group/g1/$export?_type=Patient,Observation{query}")
    return status_url, datetime.fromisoformat(_transaction_time(status_url)) + timedelta(seconds=1)


def exported_ids(exporter, manifest: dict) -> list[str]:
    """`Type/id` of every exported resource, whatever the files (by type, or of Patient blocks)."""
    return sorted(
        f"{resource['resourceType']}/{resource['id']}"
        for file in manifest["output"]
        for line in b"".join(exporter.fhir.get(file["url"]).streaming_content).splitlines()
        if (resource := json.loads(line))["resourceType"] != "Parameters"
    )


AS_OF_KICK_OFF = ["Observation/o1", "Observation/o2", "Patient/p1", "Patient/p2"]


@pytest.mark.parametrize("query", ["", "&organizeOutputBy=Patient"], ids=["by type", "organized by Patient"])
def test_a_group_export_takes_the_members_the_group_had_at_the_kick_off(exporter, query):
    status_url, later = store_members_then_kick_off(exporter, query)
    store(group("p1", "p3"), at=later)  # p2 removed, p3 added

    assert exported_ids(exporter, exporter.finish(status_url)) == AS_OF_KICK_OFF


@pytest.mark.parametrize("query", ["", "&organizeOutputBy=Patient"], ids=["by type", "organized by Patient"])
def test_a_group_deleted_after_the_kick_off_is_exported_with_its_members_of_then_and_refused_after(exporter, query):
    status_url, later = store_members_then_kick_off(exporter, query)
    with transaction.atomic():
        delete_resource("Group", "g1", now=later, authority=SERVER)

    assert exporter.kick_off("/fhir/Group/g1/$export").status_code == 410, "gone at this kick-off"
    assert exported_ids(exporter, exporter.finish(status_url)) == AS_OF_KICK_OFF

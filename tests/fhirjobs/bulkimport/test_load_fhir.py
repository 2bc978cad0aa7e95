"""load_fhir and generate_fhir: streamed, batched, every reference resolved, bad lines reported not fatal."""

import gc
import gzip
import json
import shutil
import threading
from collections import Counter
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from fhirjobs.bulkimport import loader
from fhirjobs.bulkimport.inline import load_paths
from fhirstore.models import Resource, TokenIndex
from tests.fhirstore.helpers import SYNTHEA_BUNDLES, SYNTHEA_NDJSON, assert_every_reference_resolves, patient
from tests.processes import wait_for_a_backend_waiting_on_a_lock

pytestmark = pytest.mark.django_db


def run(command: str, *args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(command, *args, "--no-progress", stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def printed_counts(output: str) -> dict[str, int]:
    counts = {}
    for line in output.splitlines():
        name, _, count = line.partition(" ")
        if name and name != "total" and count.strip().isdigit():
            counts[name] = int(count)
    return counts


def stored_counts() -> Counter:
    return Counter(Resource.objects.filter(deleted=False).values_list("resource_type", flat=True))


def write_lines(path, *lines) -> None:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))


def test_synthea_ndjson_loads_with_counts_per_type_matching_the_files():
    expected = {path.name.split(".")[0]: sum(1 for _ in path.open()) for path in SYNTHEA_NDJSON.glob("*.ndjson")}

    output, errors = run("load_fhir", str(SYNTHEA_NDJSON))

    assert errors == ""
    assert printed_counts(output) == expected
    assert stored_counts() == expected
    assert_every_reference_resolved_and_conditional_ones_rewritten()


def assert_every_reference_resolved_and_conditional_ones_rewritten():
    encounter = Resource.objects.filter(resource_type="Encounter").first().body
    assert encounter["participant"][0]["individual"]["reference"].startswith("Practitioner/")
    assert encounter["serviceProvider"]["reference"].startswith("Organization/")
    assert_every_reference_resolves()


def test_loading_the_same_files_again_makes_no_new_version():
    run("load_fhir", str(SYNTHEA_NDJSON))
    first = stored_counts()

    output, _ = run("load_fhir", str(SYNTHEA_NDJSON))

    assert stored_counts() == first
    assert set(Resource.objects.values_list("version_id", flat=True)) == {1}
    assert f"{first['Patient']}  ({first['Patient']} unchanged)" in output


def test_urn_uuid_references_to_resources_of_the_same_load_resolve(tmp_path):
    write_lines(
        tmp_path / "Observation.000.ndjson",
        {
            "resourceType": "Observation",
            "id": "o",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "urn:uuid:p"},
        },
    )
    write_lines(tmp_path / "Patient.000.ndjson", patient(id="p"))

    run("load_fhir", str(tmp_path))

    assert Resource.objects.get(logical_id="o").body["subject"]["reference"] == "Patient/p"


def test_synthea_bundles_load_through_load_fhir():
    output, _ = run("load_fhir", str(SYNTHEA_BUNDLES))

    expected = Counter()
    for path in SYNTHEA_BUNDLES.glob("*.json"):
        expected.update(entry["resource"]["resourceType"] for entry in json.loads(path.read_text())["entry"])
    assert printed_counts(output) == expected
    assert stored_counts() == expected
    assert_every_reference_resolves()


def test_bad_lines_are_reported_with_file_line_and_reason_and_the_rest_loads(tmp_path):
    path = tmp_path / "Patient.000.ndjson"
    write_lines(
        path,
        patient(id="good-1"),
        "{not json",
        {"resourceType": "Patient", "name": [{"family": "No id"}]},
        patient(id="bad-ref", managingOrganization={"reference": "Organization?identifier=urn:x|missing"}),
        patient(id="bad id"),
        {"resourceType": "Spaceship", "id": "x"},
        "",
        patient(id="good-2"),
    )

    with pytest.raises(CommandError, match="5 inputs were rejected"):
        run("load_fhir", str(path))

    assert sorted(Resource.objects.values_list("logical_id", flat=True)) == ["good-1", "good-2"]
    assert not TokenIndex.objects.exclude(resource__logical_id__in=["good-1", "good-2"]).exists()


def test_the_rejection_report_names_each_line():
    from fhirstore.loading import BulkLoader

    with BulkLoader() as loader:
        loader.add_json_line(b"{oops", "f.ndjson", 7)
        loader.add({"resourceType": "Patient", "id": "a", "managingOrganization": {"reference": "x y"}}, "f.ndjson", 8)

    assert [str(bad) for bad in loader.report.bad] == [
        "f.ndjson:7: not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        "f.ndjson:8: Patient is not valid: reference 'x y' is not Type/id, an absolute URL or #contained",
    ]


def test_a_line_the_database_cannot_store_is_reported_in_the_rest_api_s_words_and_its_neighbours_load(tmp_path):
    path = tmp_path / "Patient.000.ndjson"
    write_lines(path, patient(id="before"), patient(id="nul", family="\u0000"), patient(id="after"))

    report = load_paths([path])

    assert report.counts == {"Patient": 2}
    assert [(bad.line, bad.reason) for bad in report.bad] == [
        (2, "the line contains the escape \\u0000 (NUL), which cannot be stored")
    ]
    assert sorted(Resource.objects.values_list("logical_id", flat=True)) == ["after", "before"]


def test_a_repeated_id_in_a_file_becomes_a_new_version(tmp_path):
    path = tmp_path / "Patient.000.ndjson"
    write_lines(path, patient(id="twice", gender="male"), patient(id="twice", gender="female"))

    load_paths([path], batch_size=10)

    current = Resource.objects.get(logical_id="twice")
    assert (current.version_id, current.body["gender"]) == (2, "female")


def test_a_chunk_longer_than_a_write_batch_loads_whole_with_a_repeated_id_as_its_next_version(tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "WRITE_BATCH_SIZE", 2)
    path = tmp_path / "Patient.000.ndjson"
    write_lines(
        path,
        patient(id="a", gender="male"),
        patient(id="b"),
        patient(id="c"),
        patient(id="a", gender="female"),
        patient(id="d"),
    )

    report = load_paths([path], batch_size=100)

    assert report.counts == {"Patient": 5}
    assert sorted(Resource.objects.values_list("logical_id", "version_id")) == [("a", 2), ("b", 1), ("c", 1), ("d", 1)]
    assert Resource.objects.get(logical_id="a").body["gender"] == "female"


def test_the_cycle_collector_runs_again_after_a_load_even_one_that_failed(tmp_path, monkeypatch):
    path = tmp_path / "Patient.000.ndjson"
    write_lines(path, patient(id="a"))
    load_paths([path])
    assert gc.isenabled()

    def broken(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(loader, "_write", broken)
    with pytest.raises(RuntimeError):
        load_paths([path])
    assert gc.isenabled()


def test_referenced_types_load_first_whatever_the_order_given(tmp_path):
    names = ["Encounter.000.ndjson", "Practitioner.000.ndjson", "Organization.000.ndjson", "Location.000.ndjson"]
    for name in names:
        shutil.copy(SYNTHEA_NDJSON / name, tmp_path / name)

    report = load_paths([tmp_path / name for name in names], batch_size=7)

    assert report.bad == []
    assert report.counts["Encounter"] == 50


def test_gzipped_ndjson_loads(tmp_path):
    with gzip.open(tmp_path / "Patient.000.ndjson.gz", "wt") as file:
        file.write(json.dumps(patient(id="zipped")) + "\n")

    run("load_fhir", str(tmp_path))

    assert Resource.objects.filter(logical_id="zipped").exists()


def test_a_missing_path_is_one_readable_error():
    with pytest.raises(CommandError, match="does-not-exist does not exist"):
        run("load_fhir", "does-not-exist")


def test_generated_data_is_deterministic(tmp_path):
    run("generate_fhir", "--patients", "3", "--seed", "7", "--output", str(tmp_path / "a"))
    run("generate_fhir", "--patients", "3", "--seed", "7", "--output", str(tmp_path / "b"))
    run("generate_fhir", "--patients", "3", "--seed", "8", "--output", str(tmp_path / "c"))

    def contents(directory):
        return {path.name: path.read_text() for path in sorted(directory.iterdir())}

    assert contents(tmp_path / "a") == contents(tmp_path / "b")
    assert contents(tmp_path / "a")["Patient.000.ndjson"] != contents(tmp_path / "c")["Patient.000.ndjson"]
    assert set(contents(tmp_path / "a")) >= {
        f"{t}.000.ndjson"
        for t in (
            "Patient",
            "Encounter",
            "Observation",
            "Condition",
            "Procedure",
            "MedicationRequest",
            "Immunization",
            "Practitioner",
            "Organization",
        )
    }


def test_generated_data_loads_through_the_bulk_loader_with_references_resolved(tmp_path):
    run("generate_fhir", "--patients", "4", "--seed", "3", "--output", str(tmp_path / "generated"))
    in_files = {path.name.split(".")[0]: sum(1 for _ in path.open()) for path in (tmp_path / "generated").iterdir()}

    output, _ = run("generate_fhir", "--patients", "4", "--seed", "3", "--batch-size", "50")

    assert printed_counts(output) == in_files
    assert stored_counts() == in_files
    assert_every_reference_resolves()
    assert Resource.objects.filter(resource_type="Patient").count() == 4


def test_a_bulk_data_export_s_manifest_and_log_are_skipped_with_a_note(tmp_path):
    """smart-fetch leaves `log.ndjson` and `manifest.json` beside the resources: neither is 50 rejected lines."""
    shutil.copy(SYNTHEA_NDJSON / "Patient.000.ndjson", tmp_path)
    (tmp_path / "manifest.json").write_text(
        json.dumps(
            {
                "transactionTime": "2026-01-01T00:00:00Z",
                "request": "http://x/fhir/$export",
                "requiresAccessToken": True,
                "output": [{"type": "Patient", "url": "http://x/Patient.000.ndjson"}],
                "error": [],
            }
        )
    )
    write_lines(
        tmp_path / "log.ndjson",
        {"exportId": "1", "eventId": "kickoff", "eventDetail": {}},
        {"exportId": "1", "eventId": "export_complete", "eventDetail": {}},
    )

    out, err = run("load_fhir", str(tmp_path))

    assert printed_counts(out)["Patient"] == 3
    assert f"skipped {tmp_path / 'manifest.json'}: a Bulk Data export manifest, not resources" in err
    assert f"skipped {tmp_path / 'log.ndjson'}: a Bulk Data client's log, not resources" in err
    assert "rejected" not in err


@pytest.mark.parametrize(("validation", "rejected"), [("full", 1), ("structure", 0)])
def test_bulk_import_validation_structure_skips_the_r4b_models_that_full_applies(
    tmp_path, settings, validation, rejected
):
    settings.FHIR_FULL_VALIDATION = True
    settings.BULK_IMPORT_VALIDATION = validation
    path = tmp_path / "Patient.000.ndjson"
    write_lines(path, patient(id="seventies", birth_date="the seventies"), patient(id="fine"))

    report = load_paths([path])

    assert len(report.bad) == rejected
    assert report.counts == {"Patient": 2 - rejected}


def test_an_imported_resource_s_meta_is_its_stored_version_and_keeps_the_source_s_other_meta(tmp_path):
    path = tmp_path / "Patient.000.ndjson"
    tagged = {"versionId": "7", "lastUpdated": "2001-01-01T00:00:00Z", "tag": [{"code": "t"}]}
    write_lines(path, patient(id="tagged", meta=tagged), patient(id="plain"))

    load_paths([path])

    rows = {row.logical_id: row for row in Resource.objects.all()}
    for row in rows.values():
        assert row.body["meta"]["versionId"] == "1"
        assert row.body["meta"]["lastUpdated"].startswith(row.last_updated.strftime("%Y-%m-%dT%H:%M:%S"))
    assert rows["tagged"].body["meta"]["tag"] == [{"code": "t"}]


def test_a_changed_line_loaded_again_is_the_next_version_and_the_source_s_meta_alone_changes_nothing(tmp_path):
    from fhirstore.models import ResourceVersion

    path = tmp_path / "Patient.000.ndjson"
    write_lines(path, patient(id="same"), patient(id="changes", gender="male"))
    load_paths([path])
    write_lines(
        path,
        patient(id="same", meta={"versionId": "9", "lastUpdated": "2001-01-01T00:00:00Z"}),
        patient(id="changes", gender="female"),
    )

    report = load_paths([path])

    assert report.unchanged == {"Patient": 1}
    rows = {row.logical_id: row for row in Resource.objects.all()}
    assert (rows["same"].version_id, rows["changes"].version_id) == (1, 2)
    assert rows["changes"].body["meta"]["versionId"] == "2"
    assert list(ResourceVersion.objects.values_list("resource__logical_id", "version_id", "body__gender")) == [
        ("changes", 1, "male")
    ]
    assert set(TokenIndex.objects.filter(resource=rows["changes"], param="gender").values_list("code", flat=True)) == {
        "female"
    }


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("live_write_first_makes", ["an update", "the resource"])
def test_a_live_write_committed_while_a_batch_waits_for_its_row_is_kept_as_a_version(tmp_path, live_write_first_makes):
    """Given a REST write of Patient/p holding its row (an update, or the create of a resource the import also
    brings) when an import batch writing Patient/p arrives, then the batch waits, and once the live write commits
    the import's version comes after it: both versions are there, none lost."""
    from fhirstore.authority import SERVER
    from fhirstore.models import ResourceVersion
    from fhirstore.storage import Write, save_resources

    if live_write_first_makes == "an update":
        with transaction.atomic():
            save_resources([Write(patient(id="p", gender="unknown"))], authority=SERVER)
    path = tmp_path / "Patient.000.ndjson"
    write_lines(path, patient(id="before"), patient(id="p", gender="female"), patient(id="after"))
    written, release = threading.Event(), threading.Event()

    def live_writer():
        with transaction.atomic():
            save_resources([Write(patient(id="p", gender="male"))], authority=SERVER)
            written.set()
            release.wait(120)
        connection.close()

    thread = threading.Thread(target=live_writer)
    thread.start()
    assert written.wait(120)
    loading = threading.Thread(target=lambda: (load_paths([path]), connection.close()))
    loading.start()
    wait_for_a_backend_waiting_on_a_lock()
    release.set()
    thread.join(120)
    loading.join(120)

    current = Resource.objects.get(logical_id="p")
    history = dict(ResourceVersion.objects.filter(resource=current).values_list("version_id", "body__gender"))
    assert current.body["gender"] == "female"
    assert history[current.version_id - 1] == "male"
    assert Resource.objects.filter(logical_id__in=["before", "after"]).count() == 2

"""The parameter table, the per-type extraction it drives, FHIR date ranges, reindexing, and index use."""

import json
from datetime import datetime, timezone

import pytest
from django.db import connection, transaction

from fhirstore.authority import SERVER
from fhirstore.fhirdates import HIGHEST, LOWEST, parse_date_range
from fhirstore.models import TokenIndex
from fhirstore.scan import compartment_ids_page, resource_ids_page
from fhirstore.search_params import (
    REGISTRY,
    extract_index_rows,
    extractor_for,
    patient_compartment_params,
    patient_compartment_types,
)
from fhirstore.storage import Write, reindex_resources, save_resources
from tests.fhirstore.helpers import SYNTHEA_NDJSON, patient


def first_line(resource_type: str) -> dict:
    with (SYNTHEA_NDJSON / f"{resource_type}.000.ndjson").open() as lines:
        return json.loads(next(lines))


def test_every_alias_points_at_a_stored_parameter_of_its_type():
    for resource_type, params in REGISTRY.items():
        for param in params.values():
            if param.stored_as:
                assert params[param.stored_as].kind == "reference", (resource_type, param.name)


def test_each_type_has_its_own_extraction_function():
    assert extractor_for("Observation").__name__ == "extract_Observation"
    assert extractor_for("Observation") is extractor_for("Observation")


def test_a_synthea_encounter_yields_tokens_dates_and_references():
    encounter = first_line("Encounter")
    encounter["participant"][0]["individual"]["reference"] = "Practitioner/doc"

    rows = extract_index_rows(encounter)

    assert ("status", "", "finished") in rows.tokens
    assert ("class", "http://terminology.hl7.org/CodeSystem/v3-ActCode", "AMB") in rows.tokens
    assert ("subject", "Patient", encounter["subject"]["reference"].split("/")[1]) in rows.references
    assert ("participant", "Practitioner", "doc") in rows.references
    assert ("practitioner", "Practitioner", "doc") in rows.references
    [(name, low, high)] = rows.dates
    assert name == "date" and low < high
    assert not any(name == "patient" for name, _, _ in rows.references)  # an alias stores nothing


def test_a_patient_yields_identifiers_names_and_birthdate():
    rows = extract_index_rows(patient(family="Ängström", given="Bo", identifier=[{"system": "urn:s", "value": "1"}]))

    assert ("identifier", "urn:s", "1") in rows.tokens
    assert ("family", "angstrom", "Ängström") in rows.strings
    assert ("given", "bo", "Bo") in rows.strings
    assert (
        "birthdate",
        datetime(1974, 12, 25, tzinfo=timezone.utc),
        datetime(1974, 12, 25, 23, 59, 59, 999999, tzinfo=timezone.utc),
    ) in rows.dates


def test_types_without_parameters_yield_no_rows():
    rows = extract_index_rows({"resourceType": "Basic", "id": "b", "code": {"coding": [{"code": "x"}]}})

    assert (rows.tokens, rows.strings, rows.dates, rows.references) == (set(), set(), set(), set())


def test_patient_compartment_follows_the_r4_definition():
    assert patient_compartment_params("Observation") == ("performer", "subject")
    assert patient_compartment_params("Immunization") == ("patient",)
    assert patient_compartment_params("Encounter") == ("subject",)  # `patient` is `subject` pointing at a Patient
    assert patient_compartment_params("MedicationDispense") == ("receiver", "subject")
    assert patient_compartment_params("Organization") == ()
    assert patient_compartment_params("Medication") == ()
    # 66 types in R4's CompartmentDefinition/patient, and Device (through Device.patient) as HAPI exports it.
    assert len(patient_compartment_types()) == 67
    assert {
        "Patient",
        "MedicationDispense",
        "Specimen",
        "ServiceRequest",
        "EpisodeOfCare",
        "Device",
        "ResearchSubject",
        "Schedule",
    } <= set(patient_compartment_types())


def test_compartment_parameters_the_table_lacked_are_indexed_and_searchable():
    dispense = {
        "resourceType": "MedicationDispense",
        "id": "d",
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "receiver": [{"reference": "Patient/p2"}],
    }
    specimen = {"resourceType": "Specimen", "id": "s", "subject": {"reference": "Patient/p1"}}

    assert extract_index_rows(dispense).references == {("subject", "Patient", "p1"), ("receiver", "Patient", "p2")}
    assert extract_index_rows(specimen).references == {("subject", "Patient", "p1")}
    assert REGISTRY["MedicationDispense"]["patient"].stored_as == "subject"


@pytest.mark.parametrize(
    "text, low, high",
    [
        ("2020", datetime(2020, 1, 1), datetime(2020, 12, 31, 23, 59, 59, 999999)),
        ("2020-02", datetime(2020, 2, 1), datetime(2020, 2, 29, 23, 59, 59, 999999)),
        ("2020-02-03T04:05:06-05:00", datetime(2020, 2, 3, 9, 5, 6), datetime(2020, 2, 3, 9, 5, 6, 999999)),
        ("2020-02-03T04:05:06.25Z", datetime(2020, 2, 3, 4, 5, 6, 250000), datetime(2020, 2, 3, 4, 5, 6, 259999)),
    ],
)
def test_fhir_dates_cover_the_range_their_precision_says(text, low, high):
    assert parse_date_range(text) == (low.replace(tzinfo=timezone.utc), high.replace(tzinfo=timezone.utc))


@pytest.mark.parametrize("text", ["2021-02-29", "2020-13", "20", "yesterday", "2020-01-01T10"])
def test_impossible_dates_are_not_dates(text):
    assert parse_date_range(text) is None


@pytest.mark.parametrize("value", [None, 2020, {"start": "2020"}, ["2020"]])
def test_values_that_are_not_text_are_not_dates(value):
    assert parse_date_range(value) is None


def test_a_period_whose_bounds_are_not_text_is_indexed_as_unbounded_rather_than_failing_the_write():
    encounter = {"resourceType": "Encounter", "id": "e1", "period": {"start": {"not": "a date"}, "end": ["2020"]}}

    assert extract_index_rows(encounter).dates == {("date", LOWEST, HIGHEST)}


def test_the_last_year_reaches_the_end_of_time():
    assert parse_date_range("9999")[1] == HIGHEST


@pytest.mark.django_db
def test_reindex_rebuilds_the_rows_of_the_given_resources():
    with transaction.atomic():
        save_resources(
            [Write(patient(id="p1", identifier=[{"system": "urn:s", "value": "1"}])), Write(patient(id="p2"))],
            authority=SERVER,
        )
    TokenIndex.objects.filter(resource__logical_id="p1").delete()

    assert reindex_resources("Patient", resource_ids_page("Patient")) == 2
    assert TokenIndex.objects.filter(resource__logical_id="p1", param="identifier", code="1").exists()
    assert TokenIndex.objects.filter(resource__logical_id="p2").count() == 0  # p2 has no tokens to rebuild


def _index_rows_with_row_versions(logical_id: str) -> dict[tuple, str]:
    """Every index row of one Patient, by table and values, with its xmin (which changes when a row is rewritten)."""
    rows = {}
    with connection.cursor() as cursor:
        for table, columns in [
            ("tokenindex", "param, system, code"),
            ("stringindex", "param, normalized, exact"),
            ("dateindex", "param, low, high"),
            ("referenceindex", "param, target_type, target_id"),
        ]:
            cursor.execute(
                f"SELECT {columns}, i.xmin::text FROM fhirstore_{table} i JOIN fhirstore_resource r"
                " ON r.id = i.resource_id WHERE r.logical_id = %s",
                [logical_id],
            )
            rows.update({(table, *values): xmin for *values, xmin in cursor.fetchall()})
    return rows


def _resource_row_lockers() -> dict[str, str]:
    """logical id -> xmax of its resource row: the transaction that last locked it (FOR UPDATE sets it)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT logical_id, xmax::text FROM fhirstore_resource")
        return dict(cursor.fetchall())


@pytest.mark.django_db(transaction=True)
def test_reindex_rewrites_only_the_rows_that_differ():
    """A reindex after one parameter changed must not rewrite every other row (WAL, dead tuples, the live API)."""
    with transaction.atomic():
        save_resources(
            [
                Write(
                    patient(
                        id="p1",
                        identifier=[{"system": "urn:s", "value": "1"}],
                        name=[{"family": "Doe"}],
                        birthDate="1970-01-02",
                        generalPractitioner=[{"reference": "Practitioner/d"}],
                    )
                ),
                Write(patient(id="p2", identifier=[{"system": "urn:s", "value": "2"}])),
            ],
            authority=SERVER,
        )
    with connection.cursor() as cursor:  # rows gone stale (a token, a date), one missing
        cursor.execute("UPDATE fhirstore_tokenindex SET code = 'stale' WHERE code = '1'")
        cursor.execute(
            "INSERT INTO fhirstore_dateindex (resource_id, resource_type, param, low, high)"
            " SELECT id, 'Patient', 'birthdate', '1999-01-01', '1999-01-02' FROM fhirstore_resource"
            " WHERE logical_id = 'p1'"
        )
        cursor.execute("DELETE FROM fhirstore_stringindex WHERE exact = 'Doe'")
    before = _index_rows_with_row_versions("p1")
    lockers_before = _resource_row_lockers()

    assert reindex_resources("Patient", ["p1", "p2"]) == 2

    after = _index_rows_with_row_versions("p1")
    assert ("tokenindex", "identifier", "urn:s", "stale") not in after
    assert ("tokenindex", "identifier", "urn:s", "1") in after
    assert ("stringindex", "family", "doe", "Doe") in after
    assert [key for key in after if key[0] == "dateindex" and key[2].year == 1999] == []
    unchanged = {key: xmin for key, xmin in before.items() if key in after}
    assert any(key[0] == "dateindex" for key in unchanged) and any(key[0] == "referenceindex" for key in unchanged)
    assert {key: after[key] for key in unchanged} == unchanged
    lockers_after = _resource_row_lockers()  # only the resource whose rows differed was locked
    assert lockers_after["p1"] != lockers_before["p1"] and lockers_after["p2"] == lockers_before["p2"]


@pytest.mark.django_db
def test_keyset_and_compartment_queries_can_run_on_indexes_alone():
    """The two scans the export depends on are index range scans, whatever the table size."""
    with transaction.atomic():
        save_resources(
            [
                Write(patient(id="p1")),
                Write(
                    {
                        "resourceType": "Observation",
                        "id": "o1",
                        "status": "final",
                        "code": {},
                        "subject": {"reference": "Patient/p1"},
                    }
                ),
            ],
            authority=SERVER,
        )

    with connection.cursor() as cursor:
        # "Can run on indexes alone": with the alternatives priced out, whatever the statistics and the index
        # bloat earlier tests left (they made the planner pick the (type, last_updated) index and a sort).
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        assert "fhir_resource_type_id" in _plan(cursor, lambda: resource_ids_page("Patient", after="a"))
        plan = _plan(cursor, lambda: compartment_ids_page("Observation", ["p1"]))
        # Which of the reference index's indexes serves it depends on statistics earlier tests leave behind.
        assert "referenceindex" in plan and "Seq Scan" not in plan, plan


def _plan(cursor, run) -> str:
    captured = []
    with connection.execute_wrapper(
        lambda execute, sql, params, many, context: (
            captured.append((sql, params)) or execute(sql, params, many, context)
        )
    ):
        run()
    sql, params = captured[-1]
    cursor.execute(f"EXPLAIN {sql}", params)
    return "\n".join(row[0] for row in cursor.fetchall())

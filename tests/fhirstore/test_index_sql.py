"""The SQL extraction of the built-in search parameters (`index_sql`) writes exactly the rows the Python one
(`search_params.extractor_for`, the oracle) writes: on the Synthea fixtures, on the benchmarks' generated
resources, and on values chosen for the rules' corners."""

import json
import re
from collections import Counter

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from fhirjobs.bulkimport.inline import load_paths
from fhirstore import search_params
from fhirstore.index_sql import TABLE_OF_KIND, compiled_params, insert_index_rows, python_only_params
from fhirstore.models import Resource
from fhirstore.search_params import REGISTRY
from fhirstore.storage import reindex_resources
from fhirstore.synthetic import generate_resources
from tests.fhirstore.helpers import SYNTHEA_BUNDLES, SYNTHEA_NDJSON, store

COLUMNS = {
    "token": "param, system, code",
    "string": "param, normalized, exact",
    "date": "param, low, high",
    "reference": "param, target_type, target_id",
}


def synthea_resources() -> list[dict]:
    """Every resource of the NDJSON fixture and of the transaction bundles (ids from their `urn:uuid` fullUrls),
    each (type, id) once (the bundles repeat some of the NDJSON's organizations and practitioners)."""
    resources = [
        json.loads(line)
        for path in sorted(SYNTHEA_NDJSON.iterdir())
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    for path in sorted(SYNTHEA_BUNDLES.iterdir()):
        for entry in json.loads(path.read_text())["entry"]:
            resource = entry["resource"]
            resource.setdefault("id", entry["fullUrl"].rsplit(":", 1)[-1])
            resources.append(resource)
    return list({(r["resourceType"], r["id"]): r for r in reversed(resources)}.values())


LONG = "x" * 230
CORNERS = [
    {
        "resourceType": "Patient",
        "id": "corner-names",
        "active": True,
        "gender": "other",
        "birthDate": "1974",
        "name": [
            {"family": "Müller", "given": ["Straße", "ﬁona", "ÉMILE", "", None]},
            {"text": "Zoë O'Brien"},
            {"family": LONG, "given": [LONG + "é", LONG + "Y"]},
            {"family": ["not", "a", "string", 3]},
        ],
        "identifier": [
            {"system": None, "value": "null-system"},
            {"value": "no-system"},
            {"system": 7, "value": "n"},
            {"system": True, "value": "b"},
            {"system": "urn:s", "value": ""},
            {"value": 5},
            {"system": "urn:s", "value": "v" * 250},
        ],
        "generalPractitioner": [
            {"reference": "Practitioner/p1/_history/2"},
            {"reference": "https://x.org/Patient/1"},
            {"reference": "Nonsense/1"},
            {"reference": "Practitioner/bad_id"},
            {"reference": "Practitioner/p2/history/3"},
            {"reference": 12},
            {"display": "none"},
        ],
        "link": [{"other": {"reference": "Patient/other"}}, {"other": {"reference": "Practitioner/not-a-patient"}}],
    },
    {"resourceType": "Patient", "id": "corner-inactive", "active": False, "birthDate": "1974-02-30"},
    {"resourceType": "Patient", "id": "corner-date-newline", "birthDate": "2001-03\n", "gender": ["male"]},
    {
        "resourceType": "Encounter",
        "id": "corner-periods",
        "status": "finished",
        "class": {"system": "urn:c", "code": "AMB"},
        "type": [
            {
                "coding": [
                    {"system": "urn:t", "code": "a"},
                    {"code": "b"},
                    "plain",
                    True,
                    {"value": "idish"},
                    {"system": "urn:t", "code": ""},
                ]
            },
            {"text": "no coding"},
        ],
        "period": {"start": "2020-03-01T10:00:05.123+02:00"},
        "participant": [
            {"individual": {"reference": "Practitioner/doc"}},
            {"individual": {"reference": "RelatedPerson/rel"}},
        ],
        "subject": {"reference": "Patient/corner-names"},
    },
    {"resourceType": "Encounter", "id": "corner-open-start", "period": {"end": "2020-12"}},
    {"resourceType": "Encounter", "id": "corner-no-bounds", "period": {"start": None, "end": "garbage"}},
    {"resourceType": "Encounter", "id": "corner-empty-period", "period": {}},
    {
        "resourceType": "Observation",
        "id": "corner-times",
        "status": "final",
        "code": {"coding": []},
        "effectiveDateTime": "2020-03-01T10:00:05.1234567-05:30",
        "effectivePeriod": {"start": "9999", "end": "9999"},
        "effectiveInstant": "0001-01-01T00:00:00+01:00",
        "valueCodeableConcept": {"coding": {"code": "not-a-list"}},
        "category": [{"coding": [{"system": "urn:c", "code": "c" * 250}]}],
    },
    {
        "resourceType": "Observation",
        "id": "corner-more-times",
        "effectiveDateTime": "2020-02-29T23:59",
        "effectivePeriod": {"start": "2021-02-29", "end": "2020-01-01T00:00:00Z"},
    },
    {
        "resourceType": "Observation",
        "id": "corner-common-date-shapes",
        "effectiveDateTime": "2024-02-29T23:59:59+14:59",
        "effectivePeriod": {"start": "1000-01-01", "end": "2023-02-29"},
        "effectiveInstant": "2020-01-01T00:00:00Z",
    },
    {
        "resourceType": "Condition",
        "id": "corner-near-common-date-shapes",
        "onsetDateTime": "2020-06-31",
        "onsetPeriod": {"start": "2100-02-29", "end": "2000-02-29T24:00:00Z"},
        "recordedDate": "2020-12-31T23:59:59-15:00",
    },
    {"resourceType": "Patient", "id": "corner-early-date", "birthDate": "0999-12-31"},
    {"resourceType": "Patient", "id": "corner-late-date", "birthDate": "9999-12-31"},
    {"resourceType": "Patient", "id": "corner-leap-date", "birthDate": "1900-02-29"},
    {"resourceType": "Patient", "id": "corner-leap-date-2000", "birthDate": "2000-02-29"},
    {
        "resourceType": "Organization",
        "id": "corner-org",
        "name": "Ärzte & Co",
        "alias": ["ÅRHUS", "plain alias"],
        "active": True,
        "partOf": {"reference": "Organization/corner-org/_history/1"},
    },
]


def stored_rows() -> dict[str, set[tuple]]:
    with connection.cursor() as cursor:
        rows = {}
        for kind, table in TABLE_OF_KIND.items():
            cursor.execute(f"SELECT resource_id, resource_type, {COLUMNS[kind]} FROM {table}")
            rows[kind] = set(cursor.fetchall())
        return rows


def rows_in_sql() -> dict[str, set[tuple]]:
    """The index rows again, extracted in SQL from the stored bodies (the tables emptied first)."""
    with transaction.atomic(), connection.cursor() as cursor:
        for table in TABLE_OF_KIND.values():
            cursor.execute(f"DELETE FROM {table}")
        insert_index_rows(
            cursor,
            source="(SELECT id, resource_type, body FROM fhirstore_resource WHERE id = ANY(%(ids)s))",
            source_params={"ids": list(Resource.objects.values_list("id", flat=True))},
            targets=TABLE_OF_KIND,
        )
    return stored_rows()


def assert_same_rows(python: dict[str, set[tuple]], sql: dict[str, set[tuple]]) -> None:
    for kind in TABLE_OF_KIND:
        assert sql[kind] - python[kind] == set(), f"{kind}: rows only SQL extracts"
        assert python[kind] - sql[kind] == set(), f"{kind}: rows only Python extracts"


@pytest.mark.django_db
def test_sql_extraction_equals_python_on_the_synthea_data():
    resources = synthea_resources()
    store(*resources)
    python = stored_rows()

    sql = rows_in_sql()

    assert_same_rows(python, sql)
    exercised = Counter((kind, row[1], row[2]) for kind, rows in python.items() for row in rows)
    assert sum(exercised.values()) > 3000, exercised
    assert len(exercised) > 80, exercised  # (kind, type, parameter) combinations with rows


@pytest.mark.django_db
def test_sql_extraction_equals_python_on_generated_resources():
    store(*generate_resources(patients=3, seed=7))
    python = stored_rows()

    assert_same_rows(python, rows_in_sql())


@pytest.mark.django_db
def test_sql_extraction_equals_python_on_the_corners_of_each_rule():
    store(*json.loads(json.dumps(CORNERS)))
    python = stored_rows()

    sql = rows_in_sql()

    assert_same_rows(python, sql)
    strings = {row[3] for row in python["string"] if row[0] == Resource.objects.get(logical_id="corner-names").pk}
    assert {"muller", "strasse", "fiona", "emile", "zoe o'brien"} <= strings  # the Python normalization, via SQL
    assert any(row[2] == "onset-date" or row[4].year == 9999 for row in python["date"])


@pytest.mark.django_db
def test_only_and_skip_limit_the_rows():
    store(*json.loads(json.dumps(CORNERS)))
    python = stored_rows()
    with transaction.atomic(), connection.cursor() as cursor:
        for table in TABLE_OF_KIND.values():
            cursor.execute(f"DELETE FROM {table}")
        insert_index_rows(
            cursor,
            source="fhirstore_resource",
            source_params={},
            targets=TABLE_OF_KIND,
            only=["name", "identifier", "period-not-a-param"],
            skip=[("Organization", "name")],
        )
    sql = stored_rows()

    assert {row[2] for rows in sql.values() for row in rows} == {"name", "identifier"}
    assert {row[1] for row in sql["string"]} == {"Patient"}
    assert sql["token"] == {row for row in python["token"] if row[2] == "identifier"}


def test_every_built_in_parameter_with_rows_of_its_own_compiles_to_sql():
    stored = {(p.resource_type, p.name) for params in REGISTRY.values() for p in params.values() if p.stored_as is None}

    assert python_only_params() == ()
    assert {(p.resource_type, p.name) for p in compiled_params()} == stored


def rows_by_key() -> dict[str, set[tuple]]:
    """The index rows with the resource as (type, logical id): comparable across two loads."""
    keys = (
        dict(Resource.objects.values_list("id", "resource_type")),
        dict(Resource.objects.values_list("id", "logical_id")),
    )
    return {
        kind: {(keys[0][row[0]], keys[1][row[0]], *row[2:]) for row in rows} for kind, rows in stored_rows().items()
    }


@pytest.mark.django_db
def test_a_reindex_in_the_database_repairs_exactly_the_rows_that_differ_and_leaves_the_others_alone():
    store(*synthea_resources())
    python = stored_rows()
    procedure_ids = list(Resource.objects.filter(resource_type="Procedure").values_list("logical_id", flat=True))
    damaged = Resource.objects.filter(resource_type="Patient").order_by("id").first()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM fhirstore_stringindex WHERE resource_id = %s AND param = 'family'", [damaged.pk])
        cursor.execute("INSERT INTO fhirstore_tokenindex VALUES ('Patient', 'gender', 'stale', '', %s)", [damaged.pk])
        cursor.execute("SELECT ctid::text FROM fhirstore_tokenindex WHERE resource_type = 'Procedure'")
        procedure_tokens_before = set(cursor.fetchall())

    assert reindex_resources("Patient", [damaged.logical_id], in_database=True) == 1
    assert reindex_resources("Procedure", procedure_ids, in_database=True) == len(procedure_ids)

    assert stored_rows() == python
    with connection.cursor() as cursor:
        cursor.execute("SELECT ctid::text FROM fhirstore_tokenindex WHERE resource_type = 'Procedure'")
        assert set(cursor.fetchall()) == procedure_tokens_before  # rows found right were not rewritten


@pytest.mark.django_db
def test_a_reindex_in_the_database_of_some_parameters_touches_only_theirs():
    store(*json.loads(json.dumps(CORNERS)))
    python = stored_rows()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM fhirstore_tokenindex WHERE resource_type = 'Patient'")

    reindex_resources(
        "Patient", ["corner-names", "corner-inactive", "corner-date-newline"], params=["gender"], in_database=True
    )

    tokens = stored_rows()["token"]
    assert {row[2] for row in tokens if row[1] == "Patient"} == {"gender"}
    assert {row for row in tokens if row[2] == "gender"} == {row for row in python["token"] if row[2] == "gender"}


@pytest.mark.django_db
@pytest.mark.parametrize("in_database", [True, False], ids=["sql", "python"])
def test_a_reindex_of_built_in_parameters_reads_only_the_tables_of_their_kinds(in_database):
    store(*json.loads(json.dumps(CORNERS)))
    ids = ["corner-names", "corner-inactive", "corner-date-newline"]
    before = stored_rows()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM fhirstore_tokenindex WHERE resource_type = 'Patient' AND param = 'gender'")

    with CaptureQueriesContext(connection) as queries:
        reindex_resources("Patient", ids, params=["gender", "identifier"], in_database=in_database)

    used = {table for query in queries for table in re.findall(r"(?:FROM|INTO) (fhirstore_\w+index)\b", query["sql"])}
    assert used == {"fhirstore_tokenindex"}  # the page's own scratch tables aside
    assert stored_rows() == before


@pytest.mark.django_db
@pytest.mark.parametrize("in_database", [True, False], ids=["sql", "python"])
def test_a_reindex_of_parameters_with_longer_paths_rebuilds_their_rows(in_database):
    """The Python path reads only the elements the parameters' paths start with (`name` for `name.family`)."""
    store(*json.loads(json.dumps(CORNERS)))
    before = stored_rows()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM fhirstore_stringindex WHERE param IN ('family', 'given')")
        cursor.execute("DELETE FROM fhirstore_referenceindex WHERE param = 'link'")

    reindex_resources(
        "Patient",
        [r["id"] for r in CORNERS if r["resourceType"] == "Patient"],
        params=["family", "given", "link"],
        in_database=in_database,
    )

    assert stored_rows() == before
    assert {row[2] for row in before["string"]} >= {"family", "given"}


@pytest.mark.django_db
def test_a_reindex_of_some_parameters_in_python_evaluates_no_other(monkeypatch):
    store(*json.loads(json.dumps(CORNERS)))
    evaluated = set()

    def recording(add):
        def record(rows, param, value):
            evaluated.add(param.name)
            add(rows, param, value)

        return record

    monkeypatch.setattr(search_params, "_ADD", {kind: recording(add) for kind, add in search_params._ADD.items()})
    search_params.extractor_for.cache_clear()
    try:
        reindex_resources("Patient", ["corner-names", "corner-inactive"], params=["gender", "identifier"])
    finally:
        search_params.extractor_for.cache_clear()

    assert evaluated == {"gender", "identifier"}


@pytest.mark.django_db
@pytest.mark.parametrize("in_database", [True, False], ids=["sql", "python"])
def test_a_reindex_of_a_code_no_parameter_has_any_more_clears_its_rows_from_every_table(in_database):
    """A deleted custom parameter's rows, of whatever kind: its code is no built-in parameter's."""
    store(*json.loads(json.dumps(CORNERS)))
    pk = Resource.objects.get(logical_id="corner-names").pk
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO fhirstore_dateindex VALUES ('Patient', 'gone', '2020-01-01', '2020-01-02', %s)", [pk]
        )
        cursor.execute("INSERT INTO fhirstore_tokenindex VALUES ('Patient', 'gone', '', 'x', %s)", [pk])

    reindex_resources("Patient", ["corner-names"], params=["gone"], in_database=in_database)

    assert not [row for rows in stored_rows().values() for row in rows if row[2] == "gone"]


@pytest.mark.django_db
def test_a_bulk_load_indexes_the_same_rows_in_the_database_as_in_python(settings):
    settings.FHIR_INDEX_IN_DATABASE = False
    load_paths([SYNTHEA_NDJSON])
    in_python = rows_by_key()
    Resource.objects.all().delete()
    with connection.cursor() as cursor:
        for table in TABLE_OF_KIND.values():
            cursor.execute(f"DELETE FROM {table}")

    settings.FHIR_INDEX_IN_DATABASE = True
    load_paths([SYNTHEA_NDJSON])

    assert rows_by_key() == in_python
    assert sum(map(len, in_python.values())) > 2000

"""VALUESET_EXPAND: stale stored ValueSets pre-expanded by the scheduled job, invalidated by a delta, a new
current version, a changed ValueSet or `$invalidate-expansion`."""

from __future__ import annotations

import pytest

from batch import control
from batch.control import JobStatus
from fhirjobs.terminology.periodic import expand_stale_value_sets
from fhirstore.terminology.models import ExpansionConcept, ExpansionStatus, ValueSetExpansion
from tests.fhirstore.helpers import assert_outcome
from tests.fhirstore.terminology.helpers import ICD10CM, load_slice, parameters_of

pytestmark = pytest.mark.django_db(transaction=True)

E11 = {
    "resourceType": "ValueSet",
    "url": "http://example.org/vs/e11",
    "status": "active",
    "compose": {"include": [{"system": ICD10CM, "filter": [{"property": "concept", "op": "is-a", "value": "E11"}]}]},
}


def scheduled_run(bus) -> None:
    """What beat does once a minute, and the job it starts run to its end."""
    expand_stale_value_sets()
    bus.drain()


def expansion() -> ValueSetExpansion:
    return ValueSetExpansion.objects.get(url=E11["url"])


def expand_answer(client) -> dict:
    response = client.get("/fhir/ValueSet/e11/$expand?count=1000")
    assert response.status_code == 200, response.content[:2000]
    expanded = response.json()["expansion"]
    return {
        "codes": [c["code"] for c in expanded["contains"]],
        **{p["name"]: p.get("valueString") or p.get("valueCode") for p in expanded["parameter"]},
    }


def test_a_delta_under_e11_makes_the_expansion_stale_and_the_next_run_expands_the_new_code(uploader, reader, bus):
    load_slice()
    assert uploader.put("/fhir/ValueSet/e11", {**E11, "id": "e11"}).status_code == 201
    assert expand_answer(reader)["expansion-status"] == "NOT_EXPANDED"

    scheduled_run(bus)
    assert (expansion().status, expansion().total) == (ExpansionStatus.EXPANDED, 117)
    job = control.list_jobs(definition_ids=["VALUESET_EXPAND"])[0]
    assert job.status == JobStatus.COMPLETED
    answer = expand_answer(reader)
    assert (answer["expansion-source"], answer["expansion-status"], len(answer["codes"])) == ("stored", "EXPANDED", 117)
    expand_stale_value_sets()
    assert len(control.list_jobs(definition_ids=["VALUESET_EXPAND"])) == 1, "nothing stale: no new job"

    delta = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "system", "valueUri": ICD10CM},
            {
                "name": "codeSystem",
                "resource": {
                    "resourceType": "CodeSystem",
                    "url": ICD10CM,
                    "concept": [
                        {
                            "code": "E11.99",
                            "display": "Type 2 diabetes mellitus, a code of this test",
                            "property": [{"code": "parent", "valueCode": "E11.9"}],
                        }
                    ],
                },
            },
        ],
    }
    assert (
        parameters_of(uploader.post("/fhir/CodeSystem/$apply-codesystem-delta-add", delta))["added"]["valueInteger"]
        == 1
    )
    assert expansion().status == ExpansionStatus.NOT_EXPANDED
    assert expand_answer(reader)["expansion-source"] == "on-the-fly"

    scheduled_run(bus)
    assert (expansion().status, expansion().total) == (ExpansionStatus.EXPANDED, 118)
    assert ExpansionConcept.objects.filter(expansion=expansion(), code="E11.99").exists()
    assert "E11.99" in expand_answer(reader)["codes"]
    found = parameters_of(reader.get(f"/fhir/CodeSystem/$subsumes?system={ICD10CM}&codeA=E11&codeB=E11.99"))
    assert found["outcome"]["valueCode"] == "subsumes"


def test_a_changed_value_set_a_new_version_and_invalidate_expansion_make_it_stale(uploader, reader, bus):
    load_slice()
    uploader.put("/fhir/ValueSet/e11", {**E11, "id": "e11"})
    scheduled_run(bus)
    narrower = {
        **E11,
        "id": "e11",
        "compose": {
            "include": [{"system": ICD10CM, "filter": [{"property": "concept", "op": "is-a", "value": "E11.2"}]}]
        },
    }
    uploader.put("/fhir/ValueSet/e11", narrower)
    assert expand_answer(reader)["expansion-status"] == "NOT_EXPANDED"  # changed since its expansion
    assert len(expand_answer(reader)["codes"]) == 4  # answered on the fly from the new compose
    scheduled_run(bus)
    assert (expansion().status, expansion().total) == (ExpansionStatus.EXPANDED, 4)

    load_slice("2026-b")  # a new current version of ICD-10-CM
    assert expansion().status == ExpansionStatus.NOT_EXPANDED
    scheduled_run(bus)
    assert expansion().status == ExpansionStatus.EXPANDED

    response = uploader.post("/fhir/ValueSet/e11/$invalidate-expansion", {"resourceType": "Parameters"})
    assert parameters_of(response)["invalidated"]["valueBoolean"] is True
    assert expansion().status == ExpansionStatus.NOT_EXPANDED


def test_a_value_set_that_cannot_be_expanded_is_failed_with_its_error(uploader, bus):
    uploader.put(
        "/fhir/ValueSet/loinc",
        {
            "resourceType": "ValueSet",
            "id": "loinc",
            "url": "http://example.org/vs/l",
            "status": "active",
            "compose": {"include": [{"system": "http://loinc.org"}]},
        },
    )
    scheduled_run(bus)
    failed = ValueSetExpansion.objects.get(url="http://example.org/vs/l")
    assert failed.status == ExpansionStatus.FAILED and "no a current version" in failed.error
    assert control.list_jobs(definition_ids=["VALUESET_EXPAND"])[0].status == JobStatus.COMPLETED


def test_deltas_need_the_terminology_scope_and_stay_small(reader, uploader, settings):
    load_slice()
    delta = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "codeSystem",
                "resource": {"resourceType": "CodeSystem", "url": ICD10CM, "concept": [{"code": "X1"}, {"code": "X2"}]},
            }
        ],
    }
    assert_outcome(reader.post("/fhir/CodeSystem/$apply-codesystem-delta-add", delta), 403, "'terminology' scope")
    settings.TERMINOLOGY_DELTA_MAX_CONCEPTS = 1
    assert_outcome(uploader.post("/fhir/CodeSystem/$apply-codesystem-delta-add", delta), 400, "at most 1")
    orphan = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "codeSystem",
                "resource": {
                    "resourceType": "CodeSystem",
                    "url": ICD10CM,
                    "concept": [{"code": "X1", "property": [{"code": "parent", "valueCode": "NOPE"}]}],
                },
            }
        ],
    }
    assert_outcome(uploader.post("/fhir/CodeSystem/$apply-codesystem-delta-add", orphan), 400, "X1 → NOPE")

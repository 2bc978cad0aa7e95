"""`:below`, `:above`, `:in` and `:not-in` on token parameters, answered from the closure in SQL."""

from __future__ import annotations

import pytest
from django.db import transaction

from fhirstore.authority import SERVER
from fhirstore.storage import Write, save_resources
from tests.fhirstore.helpers import assert_outcome
from tests.fhirstore.terminology.helpers import ICD10CM

pytestmark = pytest.mark.django_db

CODED = {"c-e11": "E11", "c-e119": "E11.9", "c-e1121": "E11.21", "c-s72": "S72.001A", "c-b10": "B10.01"}


@pytest.fixture
def conditions(icd10cm):
    with transaction.atomic():
        save_resources(
            [
                Write(
                    {
                        "resourceType": "Condition",
                        "id": logical_id,
                        "subject": {"reference": "Patient/p"},
                        "code": {"coding": [{"system": ICD10CM, "code": code}]},
                    }
                )
                for logical_id, code in CODED.items()
            ]
            + [
                Write(
                    {
                        "resourceType": "Condition",
                        "id": "c-other",
                        "subject": {"reference": "Patient/p"},
                        "code": {"coding": [{"system": "http://example.org/other", "code": "E11.9"}]},
                    }
                )
            ],
            authority=SERVER,
        )


def found(client, query: str) -> set[str]:
    response = client.get(f"/fhir/Condition?{query}&_count=100")
    assert response.status_code == 200, response.content[:2000]
    return {entry["resource"]["id"] for entry in response.json().get("entry", [])}


def test_below_finds_exactly_the_conditions_coded_under_e11(reader, conditions):
    assert found(reader, f"code:below={ICD10CM}|E11") == {"c-e11", "c-e119", "c-e1121"}
    assert found(reader, f"code:below={ICD10CM}|E11.2") == {"c-e1121"}
    assert found(reader, f"code:below={ICD10CM}|19") == {"c-s72"}
    assert found(reader, f"code:below={ICD10CM}|E11.2,{ICD10CM}|B10") == {"c-e1121", "c-b10"}


def test_above_finds_the_conditions_coded_with_an_ancestor(reader, conditions):
    assert found(reader, f"code:above={ICD10CM}|E11.21") == {"c-e11", "c-e1121"}


def test_in_and_not_in_a_stored_value_set(reader, conditions):
    with transaction.atomic():
        save_resources(
            [
                Write(
                    {
                        "resourceType": "ValueSet",
                        "id": "diabetes",
                        "url": "http://example.org/vs/diabetes",
                        "status": "active",
                        "compose": {
                            "include": [
                                {
                                    "system": ICD10CM,
                                    "filter": [{"property": "concept", "op": "descendent-of", "value": "E11"}],
                                }
                            ]
                        },
                    }
                )
            ],
            authority=SERVER,
        )
    assert found(reader, "code:in=http://example.org/vs/diabetes") == {"c-e119", "c-e1121"}
    assert found(reader, "code:not-in=http://example.org/vs/diabetes") == {"c-e11", "c-s72", "c-b10", "c-other"}


def test_modifier_errors_are_4xx(reader, conditions):
    assert_outcome(reader.get("/fhir/Condition?code:below=E11"), 400, "give system|code")
    assert_outcome(reader.get("/fhir/Condition?code:below=http://loinc.org|1"), 404, "no current version")
    assert_outcome(reader.get("/fhir/Condition?code:in=http://example.org/none"), 404, "No ValueSet")

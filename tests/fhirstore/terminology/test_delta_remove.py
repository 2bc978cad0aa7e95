"""`CodeSystem/$apply-codesystem-delta-remove`: concepts removed from the current version with their
children, in one transaction; the expansions using the system become stale."""

from __future__ import annotations

import pytest

from fhirstore.terminology.models import Closure, CodeSystemVersion, ExpansionStatus, ValueSetExpansion
from tests.fhirstore.helpers import assert_outcome
from tests.fhirstore.terminology.helpers import ICD10CM, parameters_of

pytestmark = pytest.mark.django_db
REMOVE = "/fhir/CodeSystem/$apply-codesystem-delta-remove"


def delta(*concepts: dict) -> dict:
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "system", "valueUri": ICD10CM},
            {
                "name": "codeSystem",
                "resource": {"resourceType": "CodeSystem", "url": ICD10CM, "concept": list(concepts)},
            },
        ],
    }


def subsumes(client, code_a: str, code_b: str):
    return client.get(f"/fhir/CodeSystem/$subsumes?system={ICD10CM}&codeA={code_a}&codeB={code_b}")


def test_a_concept_goes_with_its_children_and_the_expansions_become_stale(icd10cm, uploader, reader):
    expansion = ValueSetExpansion.objects.create(
        url="http://example.org/vs", systems=[ICD10CM], status=ExpansionStatus.EXPANDED
    )
    closure_before = Closure.objects.filter(code_system_version_id=icd10cm).count()
    nested = {"code": "E11.2", "concept": [{"code": "E11.21"}, {"code": "E11.22"}, {"code": "E11.29"}]}
    assert parameters_of(uploader.post(REMOVE, delta(nested)))["removed"]["valueInteger"] == 4

    assert_outcome(subsumes(reader, "E11", "E11.21"), 400, "Unknown code 'E11.21'")
    assert parameters_of(subsumes(reader, "E11", "E11.9"))["outcome"]["valueCode"] == "subsumes"
    # E11.2: itself, E11, its block, its chapter; each child those and E11.2: 4 + 3 × 5 rows
    assert Closure.objects.filter(code_system_version_id=icd10cm).count() == closure_before - 19
    assert CodeSystemVersion.objects.get(pk=icd10cm).closure_count == closure_before - 19
    expansion.refresh_from_db()
    assert expansion.status == ExpansionStatus.NOT_EXPANDED
    assert parameters_of(uploader.post(REMOVE, delta(nested)))["removed"]["valueInteger"] == 0  # a retry


def test_a_concept_without_its_children_is_refused_and_nothing_is_removed(icd10cm, uploader, reader):
    assert_outcome(
        uploader.post(REMOVE, delta({"code": "E11.2"}, {"code": "E11.21"})),
        400,
        "only with its children; not removed: E11.22, E11.29",
    )
    assert parameters_of(subsumes(reader, "E11.2", "E11.21"))["outcome"]["valueCode"] == "subsumes"


def test_a_remove_needs_the_terminology_scope_and_stays_small(icd10cm, uploader, reader, settings):
    assert_outcome(reader.post(REMOVE, delta({"code": "E11.9"})), 403, "'terminology' scope")
    settings.TERMINOLOGY_DELTA_MAX_CONCEPTS = 1
    assert_outcome(uploader.post(REMOVE, delta({"code": "E11.9"}, {"code": "E11.8"})), 400, "at most 1")

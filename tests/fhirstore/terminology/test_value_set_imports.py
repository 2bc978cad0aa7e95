"""`compose.include.valueSet`: ValueSets importing others, on the ICD-10-CM slice."""

from __future__ import annotations

import pytest

from fhirstore.terminology.models import ExpansionConcept
from fhirstore.terminology.valuesets import compose_query, store_expansion, stored_value_set
from tests.fhirstore.helpers import assert_outcome
from tests.fhirstore.terminology.helpers import ICD10CM

pytestmark = pytest.mark.django_db
E11_CODES, E11_2_CODES = 117, 4
BASE = "http://example.org/vs/"


def put(client, logical_id: str, *includes: dict, exclude: tuple[dict, ...] = ()) -> None:
    compose = {"include": list(includes), **({"exclude": list(exclude)} if exclude else {})}
    response = client.put(
        f"/fhir/ValueSet/{logical_id}",
        {
            "resourceType": "ValueSet",
            "id": logical_id,
            "url": BASE + logical_id,
            "status": "active",
            "compose": compose,
        },
    )
    assert response.status_code in (200, 201), response.content[:2000]


def is_a(code: str) -> dict:
    return {"system": ICD10CM, "filter": [{"property": "concept", "op": "is-a", "value": code}]}


def codes(client, logical_id: str) -> set[str]:
    response = client.get(f"/fhir/ValueSet/{logical_id}/$expand?count=1000")
    assert response.status_code == 200, response.content[:2000]
    return {item["code"] for item in response.json()["expansion"]["contains"]}


@pytest.fixture
def value_sets(icd10cm, uploader) -> None:
    put(uploader, "e11", is_a("E11"))
    put(uploader, "e11-2", is_a("E11.2"))


def test_an_include_of_value_sets_alone_is_their_codes_and_an_exclude_takes_them_away(value_sets, uploader, reader):
    put(uploader, "imports", {"valueSet": [BASE + "e11"]}, exclude=({"valueSet": [BASE + "e11-2"]},))
    found = codes(reader, "imports")
    assert len(found) == E11_CODES - E11_2_CODES and "E11.9" in found and "E11.21" not in found
    assert compose_query(stored_value_set(logical_id="imports")["compose"]).systems == [ICD10CM]  # stale with it


def test_several_imports_or_a_system_with_an_import_are_intersected(value_sets, uploader, reader):
    put(uploader, "both", {"valueSet": [BASE + "e11", BASE + "e11-2"]})
    assert codes(reader, "both") == codes(reader, "e11-2") and len(codes(reader, "both")) == E11_2_CODES
    put(
        uploader,
        "narrowed",
        {"system": ICD10CM, "concept": [{"code": "E11.9"}, {"code": "B10.81"}], "valueSet": [BASE + "e11"]},
    )
    assert codes(reader, "narrowed") == {"E11.9"}


def test_an_import_pre_expanded_is_read_from_its_stored_rows(value_sets, uploader, reader):
    put(uploader, "imports", {"valueSet": [BASE + "e11"]})
    expansion = store_expansion(stored_value_set(logical_id="e11"))
    ExpansionConcept.objects.filter(expansion=expansion, code="E11.9").delete()  # only the stored rows lack it
    found = codes(reader, "imports")
    assert len(found) == E11_CODES - 1 and "E11.9" not in found


def test_an_import_cycle_or_an_unknown_import_is_refused(value_sets, uploader, reader):
    put(uploader, "a", {"valueSet": [BASE + "b"]})
    put(uploader, "b", {"valueSet": [BASE + "a"]})
    assert_outcome(reader.get("/fhir/ValueSet/a/$expand"), 400, f"imports itself ({BASE}b → {BASE}a → {BASE}b)")
    put(uploader, "lost", {"valueSet": [BASE + "nowhere"]})
    assert_outcome(reader.get("/fhir/ValueSet/lost/$expand"), 404, "nowhere")

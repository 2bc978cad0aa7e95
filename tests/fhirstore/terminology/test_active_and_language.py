"""`activeOnly` and `displayLanguage` on `$expand` and `$lookup`, on a SNOMED CT edition generated in the RF2
layout with a Spanish description file added."""

from __future__ import annotations

import pytest

from fhirstore.terminology import snomed, storage
from fhirstore.terminology.valuesets import store_expansion, stored_value_set
from tests.fhirstore.terminology import rf2
from tests.fhirstore.terminology.helpers import parameters_of

pytestmark = pytest.mark.django_db
SPANISH = rf2._file(
    rf2.DESCRIPTION_HEADER,
    [
        ("3001", "20250101", 1, rf2.CORE, rf2.TYPE_2, "es", rf2.FSN, "diabetes mellitus tipo 2 (trastorno)", rf2.CASE),
        ("3002", "20250101", 1, rf2.CORE, rf2.TYPE_2, "es", rf2.SYNONYM, "diabetes mellitus tipo 2", rf2.CASE),
    ],
)
WHOLE_SYSTEM = {
    "resourceType": "ValueSet",
    "id": "sct",
    "url": "http://example.org/vs/sct",
    "status": "active",
    "compose": {"include": [{"system": snomed.SYSTEM}]},
}


@pytest.fixture
def edition(db) -> int:
    files = {**rf2.SNOMED_FILES, "sct2_Description_Snapshot-es_INT_20250101.txt": SPANISH}
    version = storage.new_version(snomed.SYSTEM, "20250101")
    records = list(snomed.read_concepts(rf2.named_files(files)))
    storage.write_concepts(version.id, records)
    storage.build_closure(version.id, [record.code for record in records])
    storage.make_current(version.id, concepts=len(records))
    return version.id


def lookup_display(client, code: str, language: str) -> str:
    return parameters_of(
        client.get(f"/fhir/CodeSystem/$lookup?system={snomed.SYSTEM}&code={code}&displayLanguage={language}")
    )["display"]["valueString"]


def test_lookup_answers_the_display_in_the_asked_language_synonyms_first(edition, reader):
    assert lookup_display(reader, rf2.TYPE_2, "es") == "diabetes mellitus tipo 2"
    assert lookup_display(reader, rf2.TYPE_2, "en-US") == "Type 2 diabetes mellitus"  # the display is English
    assert lookup_display(reader, rf2.DISEASE, "es") == "Disease"  # no Spanish name: the display


def expand(client, query: str) -> dict:
    response = client.get(f"/fhir/ValueSet/sct/$expand?{query}")
    assert response.status_code == 200, response.content[:2000]
    expansion = response.json()["expansion"]
    return {
        "codes": {c["code"]: c["display"] for c in expansion["contains"]},
        "total": expansion["total"],
        "source": next(p["valueString"] for p in expansion["parameter"] if p["name"] == "expansion-source"),
    }


@pytest.mark.parametrize("pre_expanded", [False, True])
def test_active_only_leaves_inactive_concepts_out_on_the_fly_and_stored(edition, uploader, reader, pre_expanded):
    assert uploader.put("/fhir/ValueSet/sct", WHOLE_SYSTEM).status_code == 201
    if pre_expanded:
        store_expansion(stored_value_set(logical_id="sct"))
    everything, active = expand(reader, ""), expand(reader, "activeOnly=true")
    assert everything["source"] == active["source"] == ("stored" if pre_expanded else "on-the-fly")
    assert (everything["total"], active["total"]) == (7, 6)
    assert set(everything["codes"]) - set(active["codes"]) == {rf2.RETIRED}


def test_expand_translates_displays_and_a_compose_may_exclude_inactive_codes(edition, uploader, reader):
    uploader.put("/fhir/ValueSet/sct", {**WHOLE_SYSTEM, "compose": {**WHOLE_SYSTEM["compose"], "inactive": False}})
    answer = expand(reader, "displayLanguage=es")
    assert answer["total"] == 6 and rf2.RETIRED not in answer["codes"]
    assert answer["codes"][rf2.TYPE_2] == "diabetes mellitus tipo 2" and answer["codes"][rf2.DISEASE] == "Disease"
    refused = reader.get("/fhir/ValueSet/sct/$expand?activeOnly=maybe")
    assert refused.status_code == 400 and "true or false" in refused.content.decode()

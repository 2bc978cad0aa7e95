"""The terminology operations and search modifiers on a loaded slice of ICD-10-CM."""

from __future__ import annotations

import pytest
from django.db import transaction

from fhirstore.authority import SERVER
from fhirstore.storage import Write, save_resources
from fhirstore.terminology.models import ExpansionStatus, ValueSetExpansion
from fhirstore.terminology.valuesets import store_expansion, stored_value_set
from tests.fhirstore.helpers import assert_outcome
from tests.fhirstore.terminology.helpers import ICD10CM, load_slice, parameters_of

pytestmark = pytest.mark.django_db

E11_CODES = 117  # E11 and every code below it in the slice: 65 <diag>s and 52 7th-character codes


def value_set(
    *filters: dict,
    concepts: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    url: str = "http://example.org/ValueSet/vs",
) -> dict:
    include = {"system": ICD10CM}
    if filters:
        include["filter"] = list(filters)
    if concepts:
        include["concept"] = [{"code": code} for code in concepts]
    compose = {"include": [include]}
    if exclude:
        compose["exclude"] = [{"system": ICD10CM, "concept": [{"code": code} for code in exclude]}]
    return {"resourceType": "ValueSet", "id": "vs", "url": url, "status": "active", "compose": compose}


def expand(client, resource: dict, **parameters) -> dict:
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "valueSet", "resource": resource},
            *(
                {"name": name, ("valueInteger" if isinstance(v, int) else "valueString"): v}
                for name, v in parameters.items()
            ),
        ],
    }
    response = client.post("/fhir/ValueSet/$expand", body)
    assert response.status_code == 200, response.content[:2000]
    return response.json()["expansion"]


def codes(expansion: dict) -> list[str]:
    return [item["code"] for item in expansion["contains"]]


def is_a(code: str, op: str = "is-a") -> dict:
    return {"property": "concept", "op": op, "value": code}


def test_lookup_answers_display_designations_properties_and_links(reader, icd10cm):
    found = parameters_of(reader.get(f"/fhir/CodeSystem/$lookup?system={ICD10CM}&code=E11.21"))
    assert found["display"]["valueString"] == "Type 2 diabetes mellitus with diabetic nephropathy"
    assert found["version"]["valueString"] == "2026"
    response = reader.get(f"/fhir/CodeSystem/$lookup?system={ICD10CM}&code=E11.2&property=parent&property=child")
    properties = [
        (p["part"][0]["valueCode"], p["part"][1]["valueCode"])
        for p in response.json()["parameter"]
        if p["name"] == "property"
    ]
    assert properties == [("parent", "E11"), ("child", "E11.21"), ("child", "E11.22"), ("child", "E11.29")]
    designations = [
        p
        for p in parameters_of(reader.get(f"/fhir/CodeSystem/$lookup?system={ICD10CM}&code=E11.21")).items()
        if p[0] == "designation"
    ]
    assert designations


def test_lookup_by_post_with_a_coding_and_at_instance_level(reader, icd10cm):
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "coding", "valueCoding": {"system": ICD10CM, "code": "S72.001A"}}],
    }
    assert parameters_of(reader.post("/fhir/CodeSystem/$lookup", body))["display"]["valueString"].endswith(
        "initial encounter for closed fracture"
    )
    assert (
        parameters_of(reader.get("/fhir/CodeSystem/icd-10-cm/$lookup?code=T07.XXXA"))["display"]["valueString"]
        == "Unspecified multiple injuries, initial encounter"
    )


def test_lookup_errors(reader, icd10cm):
    assert_outcome(reader.get(f"/fhir/CodeSystem/$lookup?system={ICD10CM}&code=E11.99"), 400, "Unknown code")
    assert_outcome(reader.get("/fhir/CodeSystem/$lookup?system=http://loinc.org&code=1"), 404, "no a current version")
    assert_outcome(reader.get("/fhir/CodeSystem/$lookup?code=E11"), 400, "Give system and code")


def test_validate_code(reader, icd10cm):
    ok = parameters_of(reader.get(f"/fhir/CodeSystem/$validate-code?url={ICD10CM}&code=E11.9"))
    assert ok["result"]["valueBoolean"] is True
    wrong = parameters_of(reader.get(f"/fhir/CodeSystem/$validate-code?system={ICD10CM}&code=E11.9&display=Nope"))
    assert wrong["result"]["valueBoolean"] is False and "is not a display" in wrong["message"]["valueString"]
    synonym = "Type 2 diabetes mellitus with Kimmelstiel-Wilson disease"
    assert (
        parameters_of(reader.get(f"/fhir/CodeSystem/$validate-code?system={ICD10CM}&code=E11.21&display={synonym}"))[
            "result"
        ]["valueBoolean"]
        is True
    )
    assert (
        parameters_of(reader.get(f"/fhir/CodeSystem/$validate-code?system={ICD10CM}&code=X99"))["result"][
            "valueBoolean"
        ]
        is False
    )


@pytest.mark.parametrize(
    "a, b, outcome",
    [
        ("E11", "E11.9", "subsumes"),
        ("E11.9", "E11", "subsumed-by"),
        ("E11", "E11", "equivalent"),
        ("E11.9", "S72.001A", "not-subsumed"),
        ("19", "S72.001A", "subsumes"),
    ],
)
def test_subsumes(reader, icd10cm, a, b, outcome):
    found = parameters_of(reader.get(f"/fhir/CodeSystem/$subsumes?system={ICD10CM}&codeA={a}&codeB={b}"))
    assert found["outcome"]["valueCode"] == outcome


def test_expand_is_a_descendent_of_and_is_not_a(reader, icd10cm):
    assert len(codes(expand(reader, value_set(is_a("E11"))))) == E11_CODES
    assert "E11" not in codes(expand(reader, value_set(is_a("E11", "descendent-of"))))
    not_e11 = codes(expand(reader, value_set(is_a("E11", "is-not-a"))))
    assert "E11.9" not in not_e11 and "S72.001A" in not_e11
    assert expand(reader, value_set(is_a("E11")))["total"] == E11_CODES


def test_expand_concept_lists_equals_in_regex_and_excludes(reader, icd10cm):
    assert codes(expand(reader, value_set(concepts=("E11.9", "B10", "nope")))) == ["B10", "E11.9"]
    assert codes(expand(reader, value_set({"property": "code", "op": "in", "value": "E11.9,E11.8"}))) == [
        "E11.8",
        "E11.9",
    ]
    assert codes(expand(reader, value_set({"property": "code", "op": "regex", "value": r"S72\.00[12]A"}))) == [
        "S72.001A",
        "S72.002A",
    ]
    assert codes(expand(reader, value_set({"property": "kind", "op": "=", "value": "chapter"}))) == ["1", "19", "4"]
    assert codes(expand(reader, value_set(is_a("E11.2"), exclude=("E11.2", "E11.29")))) == ["E11.21", "E11.22"]


def test_expand_pages_filters_text_and_refuses_too_costly(reader, icd10cm, settings):
    page = expand(reader, value_set(is_a("E11")), offset=2, count=3)
    assert (page["total"], page["offset"], codes(page)) == (E11_CODES, 2, ["E11.00", "E11.01", "E11.1"])
    assert codes(expand(reader, value_set(is_a("E11")), filter="nephropathy")) == ["E11.21"]
    settings.TERMINOLOGY_EXPANSION_MAX_CODES = 10
    response = reader.post(
        "/fhir/ValueSet/$expand",
        {"resourceType": "Parameters", "parameter": [{"name": "valueSet", "resource": value_set(is_a("E11"))}]},
    )
    body = assert_outcome(response, 422, f"The expansion has {E11_CODES} codes")
    assert body["issue"][0]["code"] == "too-costly"
    assert len(codes(expand(reader, value_set(is_a("E11")), count=10))) == 10


def test_expand_and_validate_a_stored_value_set_by_url_and_id(reader, icd10cm):
    with transaction.atomic():
        save_resources([Write(value_set(is_a("E11")))], authority=SERVER)
    assert (
        len(codes(parameters_of_expand(reader.get("/fhir/ValueSet/$expand?url=http://example.org/ValueSet/vs"))))
        == E11_CODES
    )
    assert parameters_of_expand(reader.get("/fhir/ValueSet/vs/$expand?count=1"))["total"] == E11_CODES
    valid = parameters_of(reader.get(f"/fhir/ValueSet/vs/$validate-code?system={ICD10CM}&code=E11.9"))
    assert valid["result"]["valueBoolean"] is True
    invalid = parameters_of(
        reader.get(f"/fhir/ValueSet/$validate-code?url=http://example.org/ValueSet/vs&system={ICD10CM}&code=S72.001A")
    )
    assert invalid["result"]["valueBoolean"] is False


def parameters_of_expand(response) -> dict:
    assert response.status_code == 200, response.content[:2000]
    return response.json()["expansion"]


def test_a_stored_expansion_answers_until_a_new_version_makes_it_stale(reader, icd10cm):
    with transaction.atomic():
        save_resources([Write(value_set(is_a("E11")))], authority=SERVER)
    stored = store_expansion(stored_value_set(logical_id="vs"))  # with its id and versionId
    assert (stored.status, stored.total) == (ExpansionStatus.EXPANDED, E11_CODES)
    answer = parameters_of_expand(reader.get("/fhir/ValueSet/vs/$expand"))
    assert {"name": "expansion-source", "valueString": "stored"} in answer["parameter"]

    load_slice("2026-b")  # made current: expansions using ICD-10-CM are stale
    assert ValueSetExpansion.objects.get().status == ExpansionStatus.NOT_EXPANDED
    answer = parameters_of_expand(reader.get("/fhir/ValueSet/vs/$expand"))
    assert {"name": "expansion-source", "valueString": "on-the-fly"} in answer["parameter"]


def test_a_stored_expansion_answers_the_pages_and_filters_an_on_the_fly_one_does(reader, icd10cm):
    with transaction.atomic():
        save_resources([Write(value_set(is_a("E11")))], authority=SERVER)
    asked = [
        "",
        "count=7&offset=5",
        f"count=5&offset={E11_CODES - 2}",
        "filter=nephropathy",
        "filter=E11.6&count=3&offset=1",
        "filter=E11_",  # taken literally: no code or display holds it
        "filter=%25",
    ]
    on_the_fly = {query: parameters_of_expand(reader.get(f"/fhir/ValueSet/vs/$expand?{query}")) for query in asked}
    store_expansion(stored_value_set(logical_id="vs"))
    for query in asked:
        stored = parameters_of_expand(reader.get(f"/fhir/ValueSet/vs/$expand?{query}"))
        assert {"name": "expansion-source", "valueString": "stored"} in stored["parameter"]
        assert (stored["total"], codes(stored)) == (on_the_fly[query]["total"], codes(on_the_fly[query])), query
    assert (
        len(codes(on_the_fly["count=7&offset=5"])) == 7
        and len(codes(on_the_fly[f"count=5&offset={E11_CODES - 2}"])) == 2
        and on_the_fly["filter=E11_"]["total"] == on_the_fly["filter=%25"]["total"] == 0
    )


def test_bad_expansions_are_4xx(reader, icd10cm):
    for resource, status, text in [
        ({"resourceType": "ValueSet"}, 400, "no compose.include"),
        (value_set({"property": "concept", "op": "exists", "value": "x"}), 400, "op 'exists' is not supported"),
        (value_set({"property": "kind", "op": "is-a", "value": "x"}), 400, "applies to the property 'concept'"),
        ({"resourceType": "ValueSet", "compose": {"include": [{"system": "http://loinc.org"}]}}, 404, "no a current"),
    ]:
        assert_outcome(
            reader.post(
                "/fhir/ValueSet/$expand",
                {"resourceType": "Parameters", "parameter": [{"name": "valueSet", "resource": resource}]},
            ),
            status,
            text,
        )
    assert_outcome(reader.get("/fhir/ValueSet/$expand?url=http://example.org/none"), 404, "No ValueSet")


def test_a_reader_may_call_the_read_operations_by_post(reader, icd10cm):
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "system", "valueUri": ICD10CM}, {"name": "code", "valueCode": "E11"}],
    }
    assert reader.post("/fhir/CodeSystem/$lookup", body).status_code == 200


def test_the_capability_statement_lists_the_operations(reader):
    statement = reader.get("/fhir/metadata").json()
    by_type = {entry["type"]: entry for entry in statement["rest"][0]["resource"]}
    assert {op["name"] for op in by_type["CodeSystem"]["operation"]} == {
        "lookup",
        "validate-code",
        "subsumes",
        "upload-external-code-system",
        "apply-codesystem-delta-add",
        "apply-codesystem-delta-remove",
    }
    assert {op["name"] for op in by_type["ValueSet"]["operation"]} == {
        "expand",
        "validate-code",
        "invalidate-expansion",
    }
    code = next(p for p in by_type["Condition"]["searchParam"] if p["name"] == "code")
    assert ":below" in code["documentation"] and ":in" in code["documentation"]

"""Custom `number` and `quantity` SearchParameters: indexed by writes and the reindex, searched with prefixes,
shown by the dry run, and listed in the CapabilityStatement once searchable."""

from __future__ import annotations

import pytest

from fhirstore.models import CustomSearchParameter, NumberIndex, QuantityIndex
from tests.fhirjobs.helpers import patient
from tests.fhirjobs.reindex.helpers import search_parameter
from tests.fhirstore.helpers import assert_outcome, store

pytestmark = pytest.mark.django_db(transaction=True)

UCUM = "http://unitsofmeasure.org"
BIRTH_ORDER = search_parameter("birth-order", "Patient.multipleBirth.ofType(integer)", kind="number")
WEIGHT = search_parameter("weight-value", "Observation.value.ofType(Quantity)", base=("Observation",), kind="quantity")


def observation(
    logical_id: str,
    value: float | None = None,
    code: str | None = "kg",
    unit: str = "kg",
    system: str | None = UCUM,
    **extra,
) -> dict:
    quantity = {
        "value": value,
        "unit": unit,
        **({"code": code} if code else {}),
        **({"system": system} if system else {}),
    }
    return {
        "resourceType": "Observation",
        "id": logical_id,
        "status": "final",
        "code": {"text": "weight"},
        **({"valueQuantity": quantity} if value is not None else {}),
        **extra,
    }


def found_ids(client, resource_type: str, query: str) -> set[str]:
    response = client.get(f"/fhir/{resource_type}?{query}&_count=1000")
    assert response.status_code == 200, response.content
    return {entry["resource"]["id"] for entry in response.json().get("entry", []) if entry["search"]["mode"] == "match"}


@pytest.fixture
def twins(operator, bus):
    """Patients p1…p3 born first, second and third of a multiple birth, p4 a single birth (boolean), then
    the `number` parameter created and its automatic reindex run."""
    store(
        patient("p1", multipleBirthInteger=1),
        patient("p2", multipleBirthInteger=2),
        patient("p3", multipleBirthInteger=3),
        patient("p4", multipleBirthBoolean=False),
    )
    assert operator.post("/fhir/SearchParameter", BIRTH_ORDER).status_code == 201
    assert_outcome(operator.get("/fhir/Patient?birth-order=2"), 400, "is being indexed")
    bus.drain()
    return operator


@pytest.mark.parametrize(
    "query, expected",
    [
        ("birth-order=2", {"p2"}),
        ("birth-order=eq2", {"p2"}),
        ("birth-order=2.0", {"p2"}),
        ("birth-order=1e1", set()),  # [5, 15): none
        ("birth-order=2.4", set()),  # [2.35, 2.45): the precision written is honoured
        ("birth-order=ne2", {"p1", "p3"}),
        ("birth-order=gt1", {"p2", "p3"}),
        ("birth-order=ge2", {"p2", "p3"}),
        ("birth-order=lt2", {"p1"}),
        ("birth-order=le2", {"p1", "p2"}),
        ("birth-order=1,3", {"p1", "p3"}),
    ],
)
def test_a_number_parameter_is_indexed_by_the_reindex_and_searched_with_prefixes(twins, query, expected):
    assert found_ids(twins, "Patient", query) == expected


def test_a_number_parameter_indexes_later_writes_too(twins):
    store(patient("p5", multipleBirthInteger=2))
    assert found_ids(twins, "Patient", "birth-order=2") == {"p2", "p5"}
    assert NumberIndex.objects.filter(param="birth-order").count() == 4  # the boolean is not a number


@pytest.fixture
def weights(operator, bus):
    store(
        observation("o1", 70.0),
        observation("o2", 80.5),
        observation("o3", 70.0, code=None, system=None),
        observation("o4", 154.0, code="[lb_av]", unit="lb"),
        observation("o5"),
    )
    assert operator.post("/fhir/SearchParameter", WEIGHT).status_code == 201
    assert_outcome(operator.get("/fhir/Observation?weight-value=70"), 400, "is being indexed")
    bus.drain()
    return operator


@pytest.mark.parametrize(
    "query, expected",
    [
        ("weight-value=70", {"o1", "o3"}),  # a bare number: any unit
        (f"weight-value=70|{UCUM}|kg", {"o1"}),
        ("weight-value=70||kg", {"o1", "o3"}),  # no system: the code, or the unit's text when there is no code
        ("weight-value=80", set()),  # [79.5, 80.5): 80.5 is outside
        ("weight-value=80.5", {"o2"}),
        (f"weight-value=gt75|{UCUM}|kg", {"o2"}),
        (f"weight-value=le80.5|{UCUM}|kg", {"o1", "o2"}),
        (f"weight-value=ge100|{UCUM}|[lb_av]", {"o4"}),
        ("weight-value=ne70", {"o2", "o4"}),
        (f"weight-value=70|{UCUM}|kg,154|{UCUM}|[lb_av]", {"o1", "o4"}),
    ],
)
def test_a_quantity_parameter_is_indexed_by_the_reindex_and_searched_by_value_system_and_code(weights, query, expected):
    assert found_ids(weights, "Observation", query) == expected


def test_quantity_rows_carry_the_code_or_else_the_unit(weights):
    assert set(QuantityIndex.objects.values_list("resource__logical_id", "system", "code", "value")) == {
        ("o1", UCUM, "kg", 70.0),
        ("o2", UCUM, "kg", 80.5),
        ("o3", "", "kg", 70.0),
        ("o4", UCUM, "[lb_av]", 154.0),
    }


@pytest.mark.parametrize(
    "query, problem",
    [
        ("birth-order=two", "is not a number"),
        ("birth-order=sa2", "is not a number (optional prefix eq/ne/gt/lt/ge/le)"),
        ("birth-order=NaN", "is not a number"),
        ("birth-order:missing=true", "Modifier :missing is not supported"),
    ],
)
def test_an_invalid_number_value_is_a_400(twins, query, problem):
    assert_outcome(twins.get(f"/fhir/Patient?{query}"), 400, problem)


@pytest.mark.parametrize(
    "query, problem",
    [
        ("weight-value=heavy", "is not a number"),
        ("weight-value=70|kg", "is not a quantity"),
        ("weight-value=70|a|b|c", "is not a quantity"),
        ("weight-value=ap70||kg", "is not a number"),
    ],
)
def test_an_invalid_quantity_value_is_a_400(weights, query, problem):
    assert_outcome(weights.get(f"/fhir/Observation?{query}"), 400, problem)


def test_the_dry_run_shows_number_and_quantity_rows(weights, twins):
    rows = [
        (p["name"], {part["name"]: part["valueString"] for part in p["part"]})
        for p in weights.get("/fhir/Observation/o1/$reindex-dryrun").json()["parameter"]
    ]
    assert ("quantity", {"param": "weight-value", "system": UCUM, "code": "kg", "value": "70.0"}) in rows
    rows = [
        (p["name"], {part["name"]: part["valueString"] for part in p["part"]})
        for p in twins.get("/fhir/Patient/p2/$reindex-dryrun").json()["parameter"]
    ]
    assert ("number", {"param": "birth-order", "value": "2.0"}) in rows


def searchable(client, resource_type: str) -> dict[str, dict]:
    statement = client.get("/fhir/metadata").json()
    entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == resource_type)
    return {p["name"]: p for p in entry["searchParam"]}


def test_the_capability_statement_lists_custom_parameters_once_their_reindex_completed(operator, bus):
    store(patient("p1", multipleBirthInteger=1))
    operator.post("/fhir/SearchParameter", BIRTH_ORDER)
    assert "birth-order" not in searchable(operator, "Patient")  # being indexed: searches refuse it

    bus.drain()
    assert searchable(operator, "Patient")["birth-order"] == {
        "name": "birth-order",
        "type": "number",
        "definition": BIRTH_ORDER["url"],
        "documentation": BIRTH_ORDER["description"],
    }
    assert "birth-order" not in searchable(operator, "Observation")


def test_the_capability_statement_shows_an_override_instead_of_the_built_in_and_forgets_deleted_ones(operator, bus):
    gender = search_parameter("gender", "Patient.extension.where(url='x').value")
    sp_id = operator.post("/fhir/SearchParameter", gender).json()["id"]
    assert "gender" not in searchable(operator, "Patient")
    bus.drain()
    assert searchable(operator, "Patient")["gender"]["definition"] == gender["url"]

    operator.delete(f"/fhir/SearchParameter/{sp_id}")
    assert "gender" not in searchable(operator, "Patient")  # the built-in one is being reindexed
    bus.drain()
    assert not CustomSearchParameter.objects.exists()
    assert (
        searchable(operator, "Patient")["gender"]["definition"] == "http://hl7.org/fhir/SearchParameter/Patient-gender"
    )

"""Issue #29 item 2: FHIRPath of custom SearchParameters has a cost bound. A catastrophic regular expression runs
in linear time (RE2), a product of walks stops at a budget of values, and a new expression too costly on a
worst-case sample is refused when its SearchParameter is written."""

from __future__ import annotations

import time

import pytest

from fhirstore.custom_params import compile_expression, definitions_of
from fhirstore.exceptions import InvalidResource
from fhirstore.fhirpath import MAX_SECONDS, MAX_VALUES, ExpressionTooCostly

CATASTROPHIC = "Patient.name.where(family.matches('^(a+)+$'))"
NESTED_SELECTS = "Patient.name" + "".join(".select(%context.name" for _ in range(5)) + ")" * 5
PATIENT = {"resourceType": "Patient", "id": "p", "name": [{"family": "a" * 28 + "!"}] * 10}


def search_parameter(expression: str) -> dict:
    return {
        "resourceType": "SearchParameter",
        "status": "active",
        "code": "probe",
        "base": ["Patient"],
        "type": "string",
        "expression": expression,
    }


def test_a_catastrophic_regular_expression_runs_in_linear_time():
    started = time.monotonic()
    assert compile_expression(CATASTROPHIC)(PATIENT) == []
    assert compile_expression("Patient.name.first().family.replaceMatches('^(a+)+!$', 'x')")(PATIENT) == ["x"]
    assert time.monotonic() - started < 1.0  # Python's re: ~10 s for the first on a 28-character name


def test_a_product_of_walks_stops_at_the_budget():
    with pytest.raises(ExpressionTooCostly, match=f"{MAX_VALUES} values|{MAX_SECONDS} s"):  # which comes first: load
        compile_expression(NESTED_SELECTS)(PATIENT)  # 10⁶ values (407 MB) without the budget
    assert compile_expression("Patient.name.family")(PATIENT) == ["a" * 28 + "!"] * 10  # a normal one is untouched


def test_a_new_expression_too_costly_on_a_worst_case_sample_is_refused():
    with pytest.raises(InvalidResource, match="too costly on a sample Patient"):
        definitions_of(search_parameter("Patient.name.select(%context.name.select(%context.name))"))
    assert definitions_of(search_parameter("Patient.name.family"))[0].expression == "Patient.name.family"
    assert definitions_of(search_parameter(CATASTROPHIC))  # RE2 makes it harmless: accepted

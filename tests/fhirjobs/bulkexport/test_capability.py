"""The CapabilityStatement and `_typeFilter`: Bulk Data STU3's `operation-not-supported` extension marks the search
parameters a `_typeFilter` may not use. `_typeFilter` is the store's own search, so every parameter the
CapabilityStatement lists is usable in one and none carries the extension; this test fails, naming them, when a
listed parameter is refused in a `_typeFilter` (then the extension has to list it)."""

import pytest

from fhirjobs.bulkexport.parameters import Level, parse_export_request
from fhirstore.capability import capability_statement
from fhirstore.exceptions import InvalidRequest

pytestmark = pytest.mark.django_db

NOT_SUPPORTED = "http://hl7.org/fhir/uv/bulkdata/Extension/operation-not-supported"
VALUE_BY_TYPE = {
    "token": "x",
    "string": "x",
    "date": "2020-01-01",
    "reference": "x",
    "number": "1",
    "quantity": "1",
    "uri": "http://example.org/x",
    "composite": "x$y",
    "special": "x",
}


def test_every_listed_search_parameter_works_in_a_type_filter_and_none_is_marked_not_supported():
    refused, marked = [], []
    resources = capability_statement("http://testserver/fhir")["rest"][0]["resource"]
    for entry in resources:
        for param in entry["searchParam"]:
            expression = f"{entry['type']}?{param['name']}={VALUE_BY_TYPE[param['type']]}"
            try:
                parse_export_request(Level.SYSTEM, [("_type", entry["type"]), ("_typeFilter", expression)])
            except InvalidRequest as error:
                refused.append(f"{expression}: {error.message}")
            if any(extension["url"] == NOT_SUPPORTED for extension in param.get("extension", [])):
                marked.append(expression)

    assert sum(len(entry["searchParam"]) for entry in resources) > 500
    assert refused == [] and marked == []

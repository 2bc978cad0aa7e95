"""The CapabilityStatement (`GET /fhir/metadata`): what this server stores, does and searches by.

The built-in part is computed once per process; the custom SearchParameters are read on every request (two
small queries), so that a parameter appears as soon as its reindex completed and goes when it is deleted.
"""
from __future__ import annotations

import copy
from functools import lru_cache

from django.utils import timezone

from fhirstore.custom_params import codes_being_indexed, searchable_custom_parameters
from fhirstore.fhirdates import format_instant
from fhirstore.resource_types import RESOURCE_TYPES
from fhirstore.search_params import params_for

FHIR_VERSION = "4.0.1"  # the R4 data Synthea writes; validation uses the compatible R4B models
INTERACTIONS = ("read", "vread", "update", "delete", "history-instance", "create", "search-type")
BULK_DATA = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"  # Bulk Data Access IG v2
EXPORT_OPERATION = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"
IMPORT_OPERATION = "http://hapifhir.io/fhir/OperationDefinition/import"  # HAPI's $import
BULK_SUBMIT_OPERATION = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/bulk-submit"
TYPE_OPERATIONS = {
    "Patient": [{"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"}],
    "Group": [{"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"}],
    "CodeSystem": [{"name": name, "definition": f"http://hl7.org/fhir/OperationDefinition/CodeSystem-{name}"}
                   for name in ("lookup", "validate-code", "subsumes")]
    + [{"name": "upload-external-code-system",
        "definition": "http://hapifhir.io/fhir/OperationDefinition/CodeSystem-upload-external-code-system"}],
    "ValueSet": [{"name": name, "definition": f"http://hl7.org/fhir/OperationDefinition/ValueSet-{name}"}
                 for name in ("expand", "validate-code")],
}
TOKEN_MODIFIERS = ("below", "above", "in", "not-in")  # answered from the loaded code systems' closure
COMMON_SEARCH_PARAMS = (
    {"name": "_id", "type": "token", "documentation": "The logical id"},
    {"name": "_lastUpdated", "type": "date", "documentation": "meta.lastUpdated, with prefixes eq ne gt ge lt le sa eb"},
)


def capability_statement(base_url: str) -> dict:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": format_instant(timezone.now()),
        "kind": "instance",
        "instantiates": [BULK_DATA],
        "software": {"name": "Heavylift FHIR store"},
        "implementation": {"description": "Heavylift FHIR store", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "security": {"description": "Send an API token as `Authorization: Bearer <token>` (or `Token <token>`); "
                                        "staff sessions also work. Writes always need one."},
            "resource": _resources_with_custom_parameters(),
            "interaction": [{"code": "transaction"}, {"code": "batch"}],
            "operation": [{"name": "export", "definition": EXPORT_OPERATION},
                          {"name": "import", "definition": IMPORT_OPERATION},
                          {"name": "bulk-submit", "definition": BULK_SUBMIT_OPERATION}],
        }],
    }


def _resources_with_custom_parameters() -> list[dict]:
    """The built-in resource entries, with the searchable custom parameters added or replacing built-in ones,
    and the parameters being (re)indexed left out: a search by them is refused until their reindex completed."""
    custom = searchable_custom_parameters()
    hidden = codes_being_indexed() | {(p.resource_type, p.code) for p in custom}
    if not hidden:
        return _resources()
    resources = copy.deepcopy(_resources())
    by_type = {entry["type"]: entry for entry in resources}
    for entry in resources:
        entry["searchParam"] = [p for p in entry["searchParam"] if (entry["type"], p["name"]) not in hidden]
    for param in custom:
        by_type[param.resource_type]["searchParam"].append({
            "name": param.code, "type": param.kind,
            **({"definition": param.url} if param.url else {}),
            **({"documentation": param.description} if param.description else {}),
        })
    return resources


@lru_cache(maxsize=1)
def _resources() -> list[dict]:
    return [{
        "type": resource_type,
        "interaction": [{"code": code} for code in INTERACTIONS],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalUpdate": True,
        "searchParam": [*COMMON_SEARCH_PARAMS, *(
            {"name": param.name, "type": param.kind,
             "definition": f"http://hl7.org/fhir/SearchParameter/{resource_type}-{param.name}",
             **({"documentation": f"modifiers: :{', :'.join(TOKEN_MODIFIERS)} (loaded code systems)"}
                if param.kind == "token" else {})}
            for param in params_for(resource_type).values()
        )],
        **({"operation": TYPE_OPERATIONS[resource_type]} if resource_type in TYPE_OPERATIONS else {}),
    } for resource_type in sorted(RESOURCE_TYPES)]

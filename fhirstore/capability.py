"""The CapabilityStatement (`GET /fhir/metadata`): what this server stores, does and searches by."""
from __future__ import annotations

from functools import lru_cache

from django.utils import timezone

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
}
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
            "resource": _resources(),
            "interaction": [{"code": "transaction"}, {"code": "batch"}],
            "operation": [{"name": "export", "definition": EXPORT_OPERATION},
                          {"name": "import", "definition": IMPORT_OPERATION},
                          {"name": "bulk-submit", "definition": BULK_SUBMIT_OPERATION}],
        }],
    }


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
             "definition": f"http://hl7.org/fhir/SearchParameter/{resource_type}-{param.name}"}
            for param in params_for(resource_type).values()
        )],
        **({"operation": TYPE_OPERATIONS[resource_type]} if resource_type in TYPE_OPERATIONS else {}),
    } for resource_type in sorted(RESOURCE_TYPES)]

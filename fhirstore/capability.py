"""The CapabilityStatement (`GET /fhir/metadata`): what this server stores, does and searches by.

The built-in part is computed once per process; the custom SearchParameters are read on every request (two
small queries), so that a parameter appears as soon as its reindex completed and goes when it is deleted.
The operations (`$export`, `$import`…) are not the store's: the apps that implement them register them here
from their `AppConfig.ready`, so the store lists them without knowing them.
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
TOKEN_MODIFIERS = ("below", "above", "in", "not-in")  # answered from the loaded code systems' closure
COMMON_SEARCH_PARAMS = (
    {"name": "_id", "type": "token", "documentation": "The logical id"},
    {
        "name": "_lastUpdated",
        "type": "date",
        "documentation": "meta.lastUpdated, with prefixes eq ne gt ge lt le sa eb",
    },
)


_instantiates: list[str] = []  # canonical URLs of the CapabilityStatements this server implements
_system_operations: dict[str, str] = {}  # name → OperationDefinition URL
_type_operations: dict[str, dict[str, str]] = {}  # resource type → name → OperationDefinition URL


def register_operation(name: str, definition: str, *, resource_type: str | None = None) -> None:
    """List an operation (`export`, without the `$`) at system level, or on one resource type."""
    operations = _system_operations if resource_type is None else _type_operations.setdefault(resource_type, {})
    operations[name] = definition
    _resources.cache_clear()


def register_instantiates(canonical: str) -> None:
    """Declare that the server implements another CapabilityStatement (the Bulk Data IG's, for one)."""
    if canonical not in _instantiates:
        _instantiates.append(canonical)


def capability_statement(base_url: str) -> dict:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": format_instant(timezone.now()),
        "kind": "instance",
        **({"instantiates": list(_instantiates)} if _instantiates else {}),
        "software": {"name": "Heavylift FHIR store"},
        "implementation": {"description": "Heavylift FHIR store", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "description": "Send an API token as `Authorization: Bearer <token>` (or `Token <token>`); "
                    "staff sessions also work. Writes always need one."
                },
                "resource": _resources_with_custom_parameters(),
                "interaction": [{"code": "transaction"}, {"code": "batch"}],
                **({"operation": _operation_list(_system_operations)} if _system_operations else {}),
            }
        ],
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
        by_type[param.resource_type]["searchParam"].append(
            {
                "name": param.code,
                "type": param.kind,
                **({"definition": param.url} if param.url else {}),
                **({"documentation": param.description} if param.description else {}),
            }
        )
    return resources


@lru_cache(maxsize=1)
def _resources() -> list[dict]:
    return [
        {
            "type": resource_type,
            "interaction": [{"code": code} for code in INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalUpdate": True,
            "searchParam": [
                *COMMON_SEARCH_PARAMS,
                *(
                    {
                        "name": param.name,
                        "type": param.kind,
                        "definition": f"http://hl7.org/fhir/SearchParameter/{resource_type}-{param.name}",
                        **(
                            {"documentation": f"modifiers: :{', :'.join(TOKEN_MODIFIERS)} (loaded code systems)"}
                            if param.kind == "token"
                            else {}
                        ),
                    }
                    for param in params_for(resource_type).values()
                ),
            ],
            **(
                {"operation": _operation_list(_type_operations[resource_type])}
                if resource_type in _type_operations
                else {}
            ),
        }
        for resource_type in sorted(RESOURCE_TYPES)
    ]


def _operation_list(operations: dict[str, str]) -> list[dict]:
    return [{"name": name, "definition": definition} for name, definition in operations.items()]

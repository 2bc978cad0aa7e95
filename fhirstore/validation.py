"""Checks on every resource before it is written.

The structural check is always on and cheap (it runs inside bulk loads): a JSON object of a known type,
matching the URL, with a well-formed id and meta, and only references the store can follow. Full
validation against the `fhir.resources` R4B models (~3,500 resources/s per core) is switched on with
FHIR_FULL_VALIDATION.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import DatabaseError
from pydantic import ValidationError

from fhirstore.exceptions import InvalidRequest, InvalidResource, UnknownResourceType
from fhirstore.references import reference_elements, reference_problem
from fhirstore.resource_types import is_resource_type, is_valid_id

logger = logging.getLogger(__name__)

MAX_REPORTED_PROBLEMS = 20  # issues listed in one OperationOutcome; the rest are summarized
# The REST API's words for the same body (jobsite/edge.py), said of a line of NDJSON.
NUL_ESCAPE_REFUSED = "the line contains the escape \\u0000 (NUL), which cannot be stored"
UNSTORABLE_TEXT_STATES = ("22P05", "22021")  # untranslatable_character, character_not_in_repertoire


def holds_nul_escape(json_text: bytes) -> bool:
    """True when the JSON text has a `\\u0000` escape (PostgreSQL's jsonb cannot hold NUL); `\\\\u0000`,
    an escaped backslash before `u0000`, is text, not one."""
    return b"\\u0000" in json_text and b"\\u0000" in json_text.replace(b"\\\\", b"")


def refused_by_the_database(error: DatabaseError) -> str:
    """What a load's error file says of a write PostgreSQL refused: never the server's own text, which names
    its internals (`CONTEXT: JSON data, line 1`); that goes to the log."""
    logger.warning("the database refused a resource: %s", error)
    if getattr(error.__cause__, "sqlstate", None) in UNSTORABLE_TEXT_STATES:
        return "the resource contains text that cannot be stored (a \\u0000 escape, or not valid Unicode)"
    return "the database refused the resource (the server's log says why)"


def check_resource_type(resource: object, expected_type: str | None = None) -> dict:
    """The resource as a dict, once it is a JSON object of a known type (the URL's type, when given)."""
    if not isinstance(resource, dict):
        raise InvalidRequest("The body must be a JSON object (a FHIR resource)")
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        raise InvalidRequest("The resource has no resourceType")
    if expected_type is not None and resource_type != expected_type:
        raise InvalidRequest(f"resourceType {resource_type!r} does not match the URL's type {expected_type!r}")
    if not is_resource_type(resource_type):
        raise UnknownResourceType(f"Unknown resource type {resource_type!r}")
    return resource


def check_resource(resource: dict, references: list[dict] | None = None, *, full: bool | None = None) -> None:
    """Refuse (422) a resource that is not structurally sound, or not valid R4B when full validation is on.

    `references` are its reference elements, when the caller has collected them already; `full` says whether
    to validate against the R4B models (default FHIR_FULL_VALIDATION; an import may ask for less).
    """
    problems = []
    if not is_valid_id(resource.get("id")):
        problems.append(f"id {resource.get('id')!r} is not a FHIR id (1-64 of A-Z a-z 0-9 - .)")
    if "meta" in resource and not isinstance(resource["meta"], dict):
        problems.append("meta must be an object")
    for element in reference_elements(resource) if references is None else references:
        problem = reference_problem(element["reference"])
        if problem:
            problems.append(problem)
    if not problems and (settings.FHIR_FULL_VALIDATION if full is None else full):
        problems = _model_problems(resource)
    if problems:
        shown = problems[:MAX_REPORTED_PROBLEMS]
        if len(problems) > len(shown):
            shown.append(f"... and {len(problems) - len(shown)} more problems")
        raise InvalidResource(f"{resource['resourceType']} is not valid: {shown[0]}", problems=shown)


def _model_problems(resource: dict) -> list[str]:
    from fhir.resources.R4B import get_fhir_model_class  # imported here: loading the models takes ~1 s

    try:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    except ValidationError as error:
        return [
            f"{'.'.join(str(part) for part in problem['loc']) or resource['resourceType']}: {problem['msg']}"
            for problem in error.errors()
        ]
    return []

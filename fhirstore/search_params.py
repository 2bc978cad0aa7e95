"""The search parameters the store indexes, as one table, and the extraction of index rows from a resource.

Every parameter is a row: the resource type, the name clients search by, its kind, and the element paths
it reads (FHIRPath reduced to dotted paths; a list anywhere on the way is walked through, and a choice
type `effective[x]` is spelled out as its alternatives). `extract_index_rows` turns a resource into the
rows for the index tables, with one extraction function per resource type compiled from this table,
so a reindex job re-runs exactly what a write runs.

The Patient compartment comes from `compartments` (R4's CompartmentDefinition "patient"): each of its
parameters is flagged `compartment` here, and the ones this table lacks are added as reference parameters,
so every resource linked to a patient through them is indexed, and belongs to that patient.
An alias (`stored_as`) searches the rows of another parameter restricted to some target types, the way
`Observation.patient` is `Observation.subject` pointing at a Patient; it costs no index rows of its own.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Literal

from fhirstore.compartments import PATIENT_COMPARTMENT, PATIENT_COMPARTMENT_EXTENSIONS
from fhirstore.fhirdates import HIGHEST, LOWEST, parse_date_range
from fhirstore.resource_types import RESOURCE_TYPES, is_valid_id

Kind = Literal["token", "string", "date", "reference", "number", "quantity"]  # number, quantity: custom only

INDEXED_TEXT_LENGTH = 200  # longest string or code kept in an index row (HAPI's limit); B-tree keys stay small
# References parsed lately, remembered: a bulk load repeats each patient and encounter reference many times.
PARSED_REFERENCES_MEMO = 4096


@dataclass(frozen=True)
class SearchParam:
    resource_type: str
    name: str
    kind: Kind
    paths: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()  # reference parameters: the resource types they may point at (empty: any)
    compartment: bool = False  # links the resource into the Patient compartment of the Patient it points at
    stored_as: str | None = None  # alias: searches this other parameter's rows instead of having its own

    @property
    def index_name(self) -> str:
        """The `param` column value of this parameter's index rows."""
        return self.stored_as or self.name


def _token(name: str, *paths: str) -> tuple[Kind, str, tuple[str, ...], dict]:
    return "token", name, paths or (name,), {}


def _string(name: str, *paths: str) -> tuple[Kind, str, tuple[str, ...], dict]:
    return "string", name, paths or (name,), {}


def _date(name: str, *paths: str) -> tuple[Kind, str, tuple[str, ...], dict]:
    return "date", name, paths or (name,), {}


def _ref(name: str, *paths: str, targets: tuple[str, ...] = ()):
    return "reference", name, paths or (name,), {"targets": targets}


def _patient_alias(of: str = "subject") -> tuple[Kind, str, tuple[str, ...], dict]:
    return "reference", "patient", (), {"targets": ("Patient",), "stored_as": of}


_IDENTIFIER = _token("identifier")
_SUBJECT = _ref("subject")
_PATIENT = _ref("patient", targets=("Patient",))
_ENCOUNTER = _ref("encounter")
_PEOPLE = ("Practitioner", "PractitionerRole", "Organization", "Patient", "RelatedPerson")

_TABLE: dict[str, tuple[tuple, ...]] = {
    "Patient": (
        _IDENTIFIER,
        _string("name", "name"),
        _string("family", "name.family"),
        _string("given", "name.given"),
        _date("birthdate", "birthDate"),
        _token("gender"),
        _token("active"),
        _ref("general-practitioner", "generalPractitioner"),
        _ref("organization", "managingOrganization"),
        _ref("link", "link.other", targets=("Patient",)),
    ),
    "Practitioner": (
        _IDENTIFIER,
        _string("name", "name"),
        _string("family", "name.family"),
        _string("given", "name.given"),
        _token("active"),
    ),
    "PractitionerRole": (
        _IDENTIFIER,
        _ref("practitioner"),
        _ref("organization"),
        _ref("location"),
        _token("role", "code"),
    ),
    "Organization": (
        _IDENTIFIER,
        _string("name", "name", "alias"),
        _token("type"),
        _token("active"),
        _ref("partof", "partOf"),
    ),
    "Location": (
        _IDENTIFIER,
        _string("name", "name", "alias"),
        _token("status"),
        _ref("organization", "managingOrganization"),
    ),
    "Group": (
        _IDENTIFIER,
        _token("type"),
        _token("code"),
        _token("actual"),
        _ref("member", "member.entity"),
    ),
    "Encounter": (
        _IDENTIFIER,
        _token("status"),
        _token("class"),
        _token("type"),
        _token("reason-code", "reasonCode"),
        _SUBJECT,
        _patient_alias(),
        _date("date", "period"),
        _ref("participant", "participant.individual"),
        _ref("practitioner", "participant.individual", targets=("Practitioner",)),
        _ref("service-provider", "serviceProvider"),
        _ref("location", "location.location"),
    ),
    "Observation": (
        _IDENTIFIER,
        _token("status"),
        _token("category"),
        _token("code"),
        _token("value-concept", "valueCodeableConcept"),
        _SUBJECT,
        _patient_alias(),
        _ENCOUNTER,
        _date("date", "effectiveDateTime", "effectivePeriod", "effectiveInstant"),
        _ref("performer"),
    ),
    "Condition": (
        _IDENTIFIER,
        _token("clinical-status", "clinicalStatus"),
        _token("verification-status", "verificationStatus"),
        _token("category"),
        _token("code"),
        _SUBJECT,
        _patient_alias(),
        _ENCOUNTER,
        _ref("asserter"),
        _date("onset-date", "onsetDateTime", "onsetPeriod"),
        _date("recorded-date", "recordedDate"),
    ),
    "Procedure": (
        _IDENTIFIER,
        _token("status"),
        _token("code"),
        _token("category"),
        _token("reason-code", "reasonCode"),
        _SUBJECT,
        _patient_alias(),
        _ENCOUNTER,
        _date("date", "performedDateTime", "performedPeriod"),
        _ref("performer", "performer.actor"),
        _ref("location"),
    ),
    "MedicationRequest": (
        _IDENTIFIER,
        _token("status"),
        _token("intent"),
        _token("category"),
        _token("code", "medicationCodeableConcept"),
        _ref("medication", "medicationReference"),
        _SUBJECT,
        _patient_alias(),
        _ENCOUNTER,
        _date("authoredon", "authoredOn"),
        _ref("requester"),
    ),
    "MedicationAdministration": (
        _IDENTIFIER,
        _token("status"),
        _token("code", "medicationCodeableConcept"),
        _SUBJECT,
        _patient_alias(),
        _ref("context"),
        _date("effective-time", "effectiveDateTime", "effectivePeriod"),
        _ref("performer", "performer.actor"),
    ),
    "MedicationStatement": (
        _IDENTIFIER,
        _token("status"),
        _token("code", "medicationCodeableConcept"),
        _SUBJECT,
        _patient_alias(),
        _date("effective", "effectiveDateTime", "effectivePeriod"),
    ),
    "Immunization": (
        _IDENTIFIER,
        _token("status"),
        _token("vaccine-code", "vaccineCode"),
        _PATIENT,
        _date("date", "occurrenceDateTime"),
        _ref("location"),
        _ref("performer", "performer.actor"),
    ),
    "DiagnosticReport": (
        _IDENTIFIER,
        _token("status"),
        _token("category"),
        _token("code"),
        _SUBJECT,
        _patient_alias(),
        _ENCOUNTER,
        _date("date", "effectiveDateTime", "effectivePeriod"),
        _date("issued"),
        _ref("result"),
        _ref("performer"),
    ),
    "AllergyIntolerance": (
        _IDENTIFIER,
        _token("clinical-status", "clinicalStatus"),
        _token("verification-status", "verificationStatus"),
        _token("type"),
        _token("category"),
        _token("code"),
        _PATIENT,
        _ref("recorder"),
        _ref("asserter"),
        _date("date", "recordedDate"),
    ),
    "CarePlan": (
        _IDENTIFIER,
        _token("status"),
        _token("intent"),
        _token("category"),
        _SUBJECT,
        _patient_alias(),
        _ENCOUNTER,
        _date("date", "period"),
        _ref("care-team", "careTeam"),
    ),
    "CareTeam": (
        _IDENTIFIER,
        _token("status"),
        _token("category"),
        _SUBJECT,
        _patient_alias(),
        _ENCOUNTER,
        _date("date", "period"),
        _ref("participant", "participant.member"),
    ),
    "Claim": (
        _IDENTIFIER,
        _token("status"),
        _token("use"),
        _PATIENT,
        _date("created"),
        _ref("provider"),
        _ref("insurer"),
        _ref("payee", "payee.party"),
        _ref("encounter", "item.encounter"),
    ),
    "ExplanationOfBenefit": (
        _IDENTIFIER,
        _token("status"),
        _PATIENT,
        _date("created"),
        _ref("provider"),
        _ref("claim"),
        _ref("payee", "payee.party"),
        _ref("encounter", "item.encounter"),
    ),
    "DocumentReference": (
        _IDENTIFIER,
        _token("status"),
        _token("type"),
        _token("category"),
        _SUBJECT,
        _patient_alias(),
        _date("date"),
        _ref("author"),
        _ref("custodian"),
        _ref("encounter", "context.encounter"),
    ),
    "Device": (
        _IDENTIFIER,
        _token("status"),
        _token("type"),
        _PATIENT,
        _ref("organization", "owner"),
    ),
    "ImagingStudy": (
        _IDENTIFIER,
        _token("status"),
        _SUBJECT,
        _patient_alias(),
        _date("started"),
        _ENCOUNTER,
    ),
    "Provenance": (
        _ref("target"),
        _ref("patient", "target", targets=("Patient",)),
        _date("recorded"),
        _ref("agent", "agent.who"),
    ),
    "Coverage": (
        _IDENTIFIER,
        _token("status"),
        _token("type"),
        _ref("beneficiary"),
        _ref("subscriber"),
        _ref("policy-holder", "policyHolder"),
        _ref("payor"),
    ),
    "ServiceRequest": (
        _IDENTIFIER,
        _token("status"),
        _token("intent"),
        _token("code"),
        _token("category"),
        _SUBJECT,
        _patient_alias(),
        _ENCOUNTER,
        _date("authored", "authoredOn"),
        _ref("requester"),
        _ref("performer"),
    ),
    "Goal": (_IDENTIFIER, _token("lifecycle-status", "lifecycleStatus"), _SUBJECT, _patient_alias()),
    "RelatedPerson": (_IDENTIFIER, _string("name", "name"), _PATIENT),
    "EpisodeOfCare": (_IDENTIFIER, _token("status"), _PATIENT, _date("date", "period")),
    "FamilyMemberHistory": (_IDENTIFIER, _token("status"), _token("code", "condition.code"), _PATIENT, _date("date")),
    "QuestionnaireResponse": (
        _IDENTIFIER,
        _token("status"),
        _SUBJECT,
        _patient_alias(),
        _date("authored"),
        _ref("author"),
    ),
    "SupplyDelivery": (_IDENTIFIER, _token("status"), _PATIENT),
    "Medication": (_IDENTIFIER, _token("code"), _token("status")),
}


def _build_registry() -> dict[str, dict[str, SearchParam]]:
    registry: dict[str, dict[str, SearchParam]] = {}
    for resource_type, rows in _TABLE.items():
        assert resource_type in RESOURCE_TYPES, resource_type
        params = {}
        for kind, name, paths, options in rows:
            params[name] = SearchParam(resource_type, name, kind, paths, **options)
        registry[resource_type] = params
    for resource_type, compartment_params in {**PATIENT_COMPARTMENT, **PATIENT_COMPARTMENT_EXTENSIONS}.items():
        assert resource_type in RESOURCE_TYPES, resource_type
        params = registry.setdefault(resource_type, {})
        for name, paths in compartment_params.items():
            param = params.get(name) or _compartment_param(resource_type, name, paths, params)
            assert param.kind == "reference", (resource_type, name)
            params[name] = replace(param, compartment=True)
    for resource_type, params in registry.items():
        for param in params.values():
            assert param.stored_as is None or param.stored_as in params, (resource_type, param.name)
    return registry


def _compartment_param(
    resource_type: str, name: str, paths: tuple[str, ...], params: Mapping[str, SearchParam]
) -> SearchParam:
    """A compartment parameter the table lacks; `patient` over a stored `subject` is its alias (no rows of its own)."""
    subject = params.get("subject")
    if name == "patient" and subject is not None and subject.stored_as is None and subject.paths == paths:
        return SearchParam(resource_type, name, "reference", targets=("Patient",), stored_as="subject")
    return SearchParam(resource_type, name, "reference", paths)


REGISTRY: dict[str, dict[str, SearchParam]] = _build_registry()


def params_for(resource_type: str) -> Mapping[str, SearchParam]:
    """The indexed search parameters of a type, by name (without `_id` and `_lastUpdated`)."""
    return REGISTRY.get(resource_type, {})


def patient_compartment_params(resource_type: str) -> tuple[str, ...]:
    """The index names of the references that put a resource of this type into a patient's compartment."""
    return tuple(sorted({p.index_name for p in params_for(resource_type).values() if p.compartment}))


def patient_compartment_types() -> tuple[str, ...]:
    """The types that can belong to a Patient compartment (the Patient itself included), sorted."""
    return tuple(sorted({"Patient", *(t for t in REGISTRY if patient_compartment_params(t))}))


@dataclass
class IndexRows:
    """What one resource contributes to the index tables (sets: repeats in a resource count once)."""

    tokens: set[tuple[str, str, str]] = field(default_factory=set)  # (param, system, code)
    strings: set[tuple[str, str, str]] = field(default_factory=set)  # (param, normalized, exact)
    dates: set[tuple[str, datetime, datetime]] = field(default_factory=set)  # (param, low, high)
    references: set[tuple[str, str, str]] = field(default_factory=set)  # (param, target type, target id)
    numbers: set[tuple[str, float]] = field(default_factory=set)  # (param, value)
    quantities: set[tuple[str, str, str, float]] = field(default_factory=set)  # (param, system, code, value)


INDEX_KINDS = ("tokens", "strings", "dates", "references", "numbers", "quantities")  # the fields of IndexRows


def extract_index_rows(resource: dict) -> IndexRows:
    """The index rows of a resource, by its type's extraction function."""
    return extractor_for(resource["resourceType"])(resource)


@lru_cache(maxsize=None)
def extractor_for(resource_type: str, only: frozenset[str] | None = None) -> Callable[[dict], IndexRows]:
    """The extraction function of one resource type, compiled from the parameter table; of the parameters named in
    `only` alone, if given (a reindex of some parameters walks no other path)."""
    stored = [p for p in params_for(resource_type).values() if p.stored_as is None and (only is None or p.name in only)]
    # (first element, the rest of the path, add, param) per path: most paths are one element, and most
    # elements are absent from a given resource, so the first lookup decides cheaply.
    steps = [
        (first, tuple(rest), _ADD[p.kind], p) for p in stored for first, *rest in (path.split(".") for path in p.paths)
    ]

    def extract(resource: dict) -> IndexRows:
        rows = IndexRows()
        get = resource.get
        for first, rest, add, param in steps:
            value = get(first)
            if value is None:
                continue
            if rest:
                for found in _walk(value if type(value) is list else [value], rest):
                    add(rows, param, found)
            elif type(value) is list:
                for found in value:
                    add(rows, param, found)
            else:
                add(rows, param, value)
        return rows

    extract.__name__ = f"extract_{resource_type}"
    return extract


def add_index_values(rows: IndexRows, param: SearchParam, values: Iterable[object]) -> None:
    """Add the rows of values found for `param` (by a custom SearchParameter's FHIRPath) as its kind indexes them."""
    add = _ADD[param.kind]
    for value in values:
        add(rows, param, value)


def normalize_string(text: str) -> str:
    """Case- and accent-insensitive form, as FHIR string search matches (`Müller` finds `muller`)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


@lru_cache(maxsize=PARSED_REFERENCES_MEMO)
def parse_relative_reference(reference: str) -> tuple[str, str] | None:
    """`(type, id)` of a relative literal reference `Type/id` or `Type/id/_history/v`; None for anything else."""
    parts = reference.split("/")
    if len(parts) not in (2, 4) or (len(parts) == 4 and parts[2] != "_history"):
        return None
    if parts[0] not in RESOURCE_TYPES or not is_valid_id(parts[1]):
        return None
    return parts[0], parts[1]


def _walk(nodes: list[object], path: Sequence[str]) -> list[object]:
    """The values at `path` below `nodes`, lists along the way (and at the end) flattened."""
    current = nodes
    for key in path:  # a loop, not recursive generators: this runs for every parameter of every resource
        found: list[object] = []
        for node in current:
            if isinstance(node, dict) and (value := node.get(key)) is not None:
                if isinstance(value, list):
                    found.extend(value)
                else:
                    found.append(value)
        current = found
    return current


def _tokens(value: object) -> Iterator[tuple[str, str]]:
    if isinstance(value, bool):
        yield "", "true" if value else "false"
    elif isinstance(value, str):
        yield "", value
    elif isinstance(value, dict):
        if isinstance(value.get("coding"), list):  # CodeableConcept
            for coding in value["coding"]:
                yield from _tokens(coding)
        elif isinstance(value.get("code"), str):  # Coding
            yield str(value.get("system", "")), value["code"]
        elif isinstance(value.get("value"), str):  # Identifier
            yield str(value.get("system", "")), value["value"]


STRING_PARTS = (  # the string elements of a HumanName or Address a string parameter indexes (SQL too: index_sql)
    "text",
    "family",
    "given",
    "prefix",
    "suffix",
    "line",
    "city",
    "district",
    "state",
    "postalCode",
    "country",
)


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):  # HumanName, Address
        for key in STRING_PARTS:
            part = value.get(key)
            for text in part if isinstance(part, list) else [part]:
                if isinstance(text, str):
                    yield text


def _date_range(value: object) -> tuple[datetime, datetime] | None:
    if isinstance(value, str):
        return parse_date_range(value)
    if isinstance(value, dict) and ("start" in value or "end" in value):  # Period
        start = parse_date_range(value["start"]) if "start" in value else None
        end = parse_date_range(value["end"]) if "end" in value else None
        return (start[0] if start else LOWEST), (end[1] if end else HIGHEST)
    return None


def _add_token(rows: IndexRows, param: SearchParam, value: object) -> None:
    for system, code in _tokens(value):
        if code:
            rows.tokens.add((param.name, system[:INDEXED_TEXT_LENGTH], code[:INDEXED_TEXT_LENGTH]))


def _add_string(rows: IndexRows, param: SearchParam, value: object) -> None:
    for text in _strings(value):
        if text:
            rows.strings.add((param.name, normalize_string(text)[:INDEXED_TEXT_LENGTH], text[:INDEXED_TEXT_LENGTH]))


def _add_date(rows: IndexRows, param: SearchParam, value: object) -> None:
    covered = _date_range(value)
    if covered is not None:
        rows.dates.add((param.name, *covered))


def _add_reference(rows: IndexRows, param: SearchParam, value: object) -> None:
    if not isinstance(value, dict) or not isinstance(value.get("reference"), str):
        return
    target = parse_relative_reference(value["reference"])
    if target is not None and (not param.targets or target[0] in param.targets):
        rows.references.add((param.name, *target))


def _number(value: object) -> float | None:
    """A FHIR integer or decimal (fhirpathpy gives `Decimal`s) as stored; None for anything else, or beyond a double."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


# Quantity-like types without a `code`: Money's currency is an ISO 4217 code.
_CURRENCY_SYSTEM = "urn:iso:std:iso:4217"


def _add_number(rows: IndexRows, param: SearchParam, value: object) -> None:
    number = _number(value)
    if number is not None:
        rows.numbers.add((param.name, number))


def _add_quantity(rows: IndexRows, param: SearchParam, value: object) -> None:
    """Quantity, and its profiles Age, Duration, Distance, Count, SimpleQuantity; Money (value + currency)."""
    if not isinstance(value, dict) or (number := _number(value.get("value"))) is None:
        return
    if isinstance(value.get("currency"), str):
        system, code = _CURRENCY_SYSTEM, value["currency"]
    else:
        system = value.get("system") if isinstance(value.get("system"), str) else ""
        code = next((value[key] for key in ("code", "unit") if isinstance(value.get(key), str)), "")
    rows.quantities.add((param.name, system[:INDEXED_TEXT_LENGTH], code[:INDEXED_TEXT_LENGTH], number))


_ADD: dict[Kind, Callable[[IndexRows, SearchParam, object], None]] = {
    "token": _add_token,
    "string": _add_string,
    "date": _add_date,
    "reference": _add_reference,
    "number": _add_number,
    "quantity": _add_quantity,
}

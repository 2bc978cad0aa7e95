"""The kick-off parameters of `$export`: from a query string or a `Parameters` body to one checked request,
and from that request to the BULK_EXPORT job's parameters (`job_parameters`) and back (`ExportJob`).

Every problem is collected and reported at once (400 with one OperationOutcome issue each). With
`Prefer: handling=lenient`, what this server does not support (unknown parameters, unknown types, filters
on unindexed search parameters, `includeAssociatedData` values other than the IG's two) is left out with a
warning instead; what is wrong whatever the server (a malformed `_since` or `_until`, an `_until` before
`_since`, `patient` at system level, an unknown patient) is refused either way.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from django.conf import settings

from fhirjobs.bulkexport.exceptions import InvalidExportRequest
from fhirstore.exceptions import InvalidRequest, UnsupportedSearch
from fhirstore.fhirdates import format_instant, parse_date_range
from fhirstore.resource_types import RESOURCE_TYPES, is_valid_id
from fhirstore.scan import group_patient_ids, missing_ids, share_of_rows
from fhirstore.search import type_filter
from fhirstore.search_params import parse_relative_reference, patient_compartment_types

OUTPUT_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
SUPPORTED = frozenset(
    {
        "_outputFormat",
        "_since",
        "_until",
        "_type",
        "_typeFilter",
        "_elements",
        "patient",
        "allowPartialManifests",
        "organizeOutputBy",
        "includeAssociatedData",
    }
)
ORGANIZE_OUTPUT_BY = frozenset({"Patient"})  # `organizeOutputBy` values this server supports
LATEST_PROVENANCE, RELEVANT_PROVENANCE = "LatestProvenanceResources", "RelevantProvenanceResources"
ASSOCIATED_DATA_SYSTEM = "http://hl7.org/fhir/uv/bulkdata/CodeSystem/include-associated-data"
ELEMENT = re.compile(r"^[a-z][A-Za-z0-9]*$")  # a top-level FHIR element name
ALWAYS_KEPT_ELEMENTS = ("resourceType", "id", "meta")  # `_elements` never removes these
# A whole-store walk pages by row id when the types asked for are at least this share of the rows: a row range
# reads every row of its stretch of the table once (10,000 rows of all types: 59 ms, measured), a range of one
# type's logical ids reads a third of that type's blocks (10,000 Observations of 200k resources: 124 ms).
ROW_RANGES_MIN_SHARE = 0.5


class Level(StrEnum):
    SYSTEM = "system"
    PATIENT = "patient"
    GROUP = "group"


@dataclass(frozen=True)
class ExportRequest:
    """A checked export request, in canonical form (sorted, deduplicated), as the job receives it."""

    level: Level
    types: tuple[str, ...]
    since: datetime | None = None
    until: datetime | None = None  # `_until`: the export reads the store as it was then (if before transactionTime)
    type_filters: tuple[str, ...] = ()  # `Type?query`, each parsed by the store's search
    elements: tuple[str, ...] = ()  # `name` (every type) or `Type.name`
    patients: tuple[str, ...] = ()  # Patient ids (patient level only)
    group_id: str | None = None
    partial_manifests: bool = False  # `allowPartialManifests`: the status URL lists files while the export runs
    organize_output_by: str | None = None  # `organizeOutputBy`: files of Patient blocks instead of one type each
    associated_data: str | None = (
        None  # `includeAssociatedData`: LatestProvenanceResources or RelevantProvenanceResources
    )
    warnings: tuple[str, ...] = field(default=(), compare=False)  # what lenient handling left out

    def fingerprint(self) -> str:
        """The same for two requests that export the same thing."""
        canonical = {
            **asdict(self),
            "since": format_instant(self.since) if self.since else None,
            "until": format_instant(self.until) if self.until else None,
        }
        del canonical["warnings"]
        return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


@dataclass
class _Problems:
    lenient: bool
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def unsupported(self, message: str) -> None:
        """Refused, or left out when the client asked for lenient handling."""
        (self.warnings if self.lenient else self.errors).append(message)


def query_parameters(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """GET parameters: a comma-joined value is a list, as a repeated parameter is (`_typeFilter` too)."""
    return [(name, item) for name, value in pairs for item in value.split(",") if item.strip()]


def body_parameters(document: object, *, comma_joined: bool = True) -> list[tuple[str, str]]:
    """A POSTed `Parameters` resource as (name, value) pairs; `_type` and `_elements` may still be comma-joined,
    unless `comma_joined` is False (the STU4 ballot: a list is the parameter repeated, and a comma is a 400)."""
    if not isinstance(document, dict) or document.get("resourceType") != "Parameters":
        raise InvalidRequest("POST $export takes a Parameters resource")
    pairs, joined = [], []
    for parameter in document.get("parameter") or []:
        if not isinstance(parameter, dict) or not isinstance(parameter.get("name"), str):
            raise InvalidRequest("Each Parameters.parameter needs a name")
        name = parameter["name"]
        value = _parameter_value(name, parameter)
        items = value.split(",") if name in ("_type", "_elements") else [value]
        if len(items) > 1 and not comma_joined:
            joined.append(f"{name} {value!r} is comma-joined: repeat the parameter, one value each")
        pairs.extend((name, item) for item in items if item.strip())
    if joined:
        raise InvalidExportRequest(joined)
    return pairs


def _parameter_value(name: str, parameter: dict) -> str:
    if isinstance(parameter.get("valueReference"), dict):
        return str(parameter["valueReference"].get("reference", ""))
    if isinstance(parameter.get("valueCoding"), dict):  # includeAssociatedData is a Coding in the IG's definition
        system, code = parameter["valueCoding"].get("system"), str(parameter["valueCoding"].get("code", ""))
        return code if system in (None, ASSOCIATED_DATA_SYSTEM) else f"{system}|{code}"  # another system's: unknown
    values = [value for key, value in parameter.items() if key.startswith("value")]
    if len(values) != 1 or not isinstance(values[0], (str, bool)):
        raise InvalidRequest(f"Parameter {name!r} needs one value (valueString, valueInstant, valueReference, …)")
    return str(values[0]).lower() if isinstance(values[0], bool) else values[0]


def parse_export_request(
    level: Level, pairs: Sequence[tuple[str, str]], *, lenient: bool = False, group_id: str | None = None
) -> ExportRequest:
    """Check every parameter; InvalidExportRequest lists every problem. Group and patients must exist."""
    problems = _Problems(lenient)
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        values.setdefault(name, []).append(value.strip())
    for name in sorted(set(values) - SUPPORTED):
        problems.unsupported(f"Parameter {name!r} is not supported by this server")

    _check_output_format(values.get("_outputFormat", []), problems)
    since = _instant("_since", values.get("_since", []), problems, last=False)
    until = _instant("_until", values.get("_until", []), problems, last=True)
    if since is not None and until is not None and until < since:
        problems.errors.append(
            f"_until ({format_instant(until)}) is before _since ({format_instant(since)}): the window is empty"
        )
    organize_output_by = _organize_output_by(values.get("organizeOutputBy", []), problems)
    in_compartments = level is not Level.SYSTEM or organize_output_by is not None
    allowed = frozenset(patient_compartment_types()) if in_compartments else RESOURCE_TYPES
    types = _types(values.get("_type"), allowed, level, problems, organized=organize_output_by is not None)
    type_filters = _type_filters(values.get("_typeFilter", []), types, problems)
    elements = _elements(values.get("_elements", []), problems)
    patients = _patients(values.get("patient", []), level, problems)
    partial_manifests = _boolean("allowPartialManifests", values.get("allowPartialManifests", []), problems)
    associated_data = _associated_data(
        values.get("includeAssociatedData", []), problems, organized=organize_output_by is not None
    )
    if level is Level.GROUP:
        group_patient_ids(group_id)  # 404 or 410 for an unknown or deleted Group
    if problems.errors:
        raise InvalidExportRequest(problems.errors)
    return ExportRequest(
        level=level,
        types=types,
        since=since,
        until=until,
        type_filters=type_filters,
        elements=elements,
        patients=patients,
        group_id=group_id,
        partial_manifests=partial_manifests,
        organize_output_by=organize_output_by,
        associated_data=associated_data,
        warnings=tuple(problems.warnings),
    )


def _check_output_format(formats: list[str], problems: _Problems) -> None:
    for output_format in set(formats):
        if output_format.replace(" ", "+") not in OUTPUT_FORMATS:  # an unencoded `+` arrives as a space
            problems.errors.append(f"_outputFormat {output_format!r} is not supported; use application/fhir+ndjson")


def _boolean(name: str, texts: list[str], problems: _Problems) -> bool:
    """A boolean parameter (`true`/`false`, as FHIR writes them; a POST's valueBoolean arrives as that text)."""
    if not texts:
        return False
    if len(set(texts)) > 1 or texts[0] not in ("true", "false"):
        problems.errors.append(f"{name} takes one value, true or false (got {', '.join(sorted(set(texts)))})")
        return False
    return texts[0] == "true"


def _instant(name: str, texts: list[str], problems: _Problems, *, last: bool) -> datetime | None:
    """`_since` or `_until`. A value coarser than an instant (a date, a time to the second) covers a span: `_since`
    takes its first instant, `_until` its last, so that both include the whole of what the client wrote."""
    if not texts:
        return None
    if len(set(texts)) > 1:
        problems.errors.append(f"{name} may be given once")
        return None
    text = texts[0].replace(" ", "+")  # an unencoded `+01:00` arrives as a space
    covered = parse_date_range(text)
    if covered is None:
        problems.errors.append(f"{name} {texts[0]!r} is not a FHIR instant (e.g. 2024-01-31T12:00:00Z)")
        return None
    return covered[1] if last else covered[0]


def _organize_output_by(texts: list[str], problems: _Problems) -> str | None:
    """`organizeOutputBy`: Patient blocks, or None (files of one type each). Another type is not supported."""
    if not texts:
        return None
    if len(set(texts)) > 1:
        problems.errors.append("organizeOutputBy may be given once")
        return None
    if texts[0] not in ORGANIZE_OUTPUT_BY:
        problems.unsupported(
            f"organizeOutputBy {texts[0]!r} is not supported: this server organizes output by "
            "Patient only (or by resource type, without organizeOutputBy)"
        )
        return None
    return texts[0]


def _associated_data(texts: list[str], problems: _Problems, *, organized: bool) -> str | None:
    """`includeAssociatedData`: which Provenance to export beside the resources, or None.

    Of the IG's values, both Provenance ones are supported; given both, the least restrictive (the largest
    export) applies, as the IG says: every Provenance of each exported resource. A custom value (`_name`) or
    any other is not supported (400; lenient: left out with a warning).
    """
    known, other = set(), set()
    for text in texts:
        (known if text in (LATEST_PROVENANCE, RELEVANT_PROVENANCE) else other).add(text)
    for value in sorted(other):
        kind = "custom value" if value.startswith("_") else "value"
        problems.unsupported(
            f"includeAssociatedData {kind} {value!r} is not supported: this server supports "
            f"{LATEST_PROVENANCE} and {RELEVANT_PROVENANCE}"
        )
    if known and organized:
        problems.unsupported(
            "includeAssociatedData is not supported with organizeOutputBy: the Provenance files "
            "would stand outside the Patient blocks"
        )
        return None
    if not known:
        return None
    return RELEVANT_PROVENANCE if RELEVANT_PROVENANCE in known else LATEST_PROVENANCE


def _types(
    names: list[str] | None, allowed: frozenset[str], level: Level, problems: _Problems, *, organized: bool = False
) -> tuple[str, ...]:
    if names is None:
        return tuple(sorted(allowed))
    types = set()
    for name in names:
        if name not in RESOURCE_TYPES:
            problems.unsupported(f"_type {name!r} is not a resource type this server knows")
        elif name not in allowed and organized:
            problems.unsupported(
                f"_type {name!r} cannot be in a Patient compartment, so an export organized by "
                "Patient has no block to put it in"
            )
        elif name not in allowed:
            problems.unsupported(
                f"_type {name!r} cannot be in a Patient compartment, so a {level} export has none of it"
            )
        else:
            types.add(name)
    return tuple(sorted(types))


def _type_filters(expressions: list[str], types: tuple[str, ...], problems: _Problems) -> tuple[str, ...]:
    kept = set()
    for expression in expressions:
        resource_type = expression.partition("?")[0]
        try:
            type_filter(expression)
        except UnsupportedSearch as error:
            problems.unsupported(f"_typeFilter {expression!r}: {error.message}")
            continue
        except InvalidRequest as error:
            if resource_type in RESOURCE_TYPES and "?" in expression:
                problems.unsupported(f"_typeFilter {expression!r}: {error.message}")
            else:
                problems.errors.append(f"_typeFilter {expression!r}: {error.message}")
            continue
        if resource_type not in types:
            problems.unsupported(f"_typeFilter {expression!r} is for a type this export does not include")
            continue
        kept.add(expression)
    return tuple(sorted(kept))


def _elements(names: list[str], problems: _Problems) -> tuple[str, ...]:
    kept = set()
    for name in names:
        first, _, rest = name.partition(".")
        if first[:1].isupper() and first not in RESOURCE_TYPES:
            problems.errors.append(f"_elements {name!r}: {first!r} is not a resource type")
        elif not ELEMENT.match(rest if first[:1].isupper() else name):
            problems.unsupported(
                f"_elements {name!r}: only top-level elements (e.g. status, Patient.name) are supported"
            )
        else:
            kept.add(name)
    return tuple(sorted(kept))


def _patients(references: list[str], level: Level, problems: _Problems) -> tuple[str, ...]:
    if not references:
        return ()
    if level is Level.SYSTEM:
        problems.errors.append("patient is not allowed at system level; use Patient/$export or Group/[id]/$export")
        return ()
    if level is Level.GROUP:
        problems.unsupported("patient is not supported at group level; the Group says who is exported")
        return ()
    ids = set()
    for reference in references:
        target = parse_relative_reference(reference) if "/" in reference else ("Patient", reference)
        if target is None or target[0] != "Patient" or not is_valid_id(target[1]):
            problems.errors.append(f"patient {reference!r} is not a Patient reference (Patient/[id])")
        else:
            ids.add(target[1])
    unknown = missing_ids("Patient", sorted(ids)) if ids else []
    if unknown:
        problems.errors.append(f"Unknown patient(s): {', '.join('Patient/' + patient for patient in unknown)}")
    return tuple(sorted(ids))


@dataclass(frozen=True)
class ExportJob:
    """The job's parameters, typed."""

    export_id: uuid.UUID
    level: Level
    types: tuple[str, ...]
    since: datetime | None
    requested_until: datetime | None  # `_until`
    type_filters: tuple[str, ...]
    elements: tuple[str, ...]
    patients: tuple[str, ...]
    group_id: str | None
    base_url: str
    request_url: str
    transaction_time: str
    chunk_size: int
    row_ranges: bool  # walks the whole store by row id ranges (decided at the kick-off, see `walks_row_ranges`)
    organize_output_by: str | None = None  # "Patient": files of Patient blocks (definition version 3)
    patients_per_file: int = 100  # blocks per file, when organized by Patient
    associated_data: str | None = None  # includeAssociatedData: which Provenance to add
    pages_per_chunk: int | None = None  # row ranges or Patient pages per fetch chunk (None: version 3's 8 and 1)
    first_range_rows: int | None = None  # the first row range's width (version 3: none narrower)

    @property
    def until(self) -> datetime:
        """The export reads the store as it was at its transactionTime (see `scan`), or at `_until` when that is
        earlier: a resource changed after `_until` is exported in its version of then, one created after it is
        left out, and one deleted after it is still exported (and not listed under `deleted`)."""
        transaction_time = datetime.fromisoformat(self.transaction_time)
        if self.requested_until is None:
            return transaction_time
        return min(transaction_time, self.requested_until)

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> ExportJob:
        since, until = parameters.get("since"), parameters.get("until")
        return cls(
            export_id=uuid.UUID(parameters["export_id"]),
            level=Level(parameters["level"]),
            types=tuple(parameters["types"]),
            since=parse_date_range(since)[0] if since else None,
            requested_until=parse_date_range(until)[0] if until else None,
            type_filters=tuple(parameters["type_filters"]),
            elements=tuple(parameters["elements"]),
            patients=tuple(parameters["patients"]),
            group_id=parameters.get("group_id"),
            base_url=parameters["base_url"],
            request_url=parameters["request_url"],
            transaction_time=parameters["transaction_time"],
            chunk_size=parameters["chunk_size"],
            row_ranges=parameters.get("row_ranges", False),
            organize_output_by=parameters.get("organize_output_by"),
            patients_per_file=parameters.get("patients_per_file", 100),
            associated_data=parameters.get("associated_data"),
            pages_per_chunk=parameters.get("pages_per_chunk"),
            first_range_rows=parameters.get("first_range_rows"),
        )


def job_parameters(
    request: ExportRequest, *, export_id: uuid.UUID, base_url: str, request_url: str, transaction_time: datetime
) -> dict[str, Any]:
    return {
        "export_id": str(export_id),
        "level": request.level.value,
        "types": list(request.types),
        "since": format_instant(request.since) if request.since else None,
        "until": format_instant(request.until) if request.until else None,
        "type_filters": list(request.type_filters),
        "elements": list(request.elements),
        "patients": list(request.patients),
        "group_id": request.group_id,
        "base_url": base_url,
        "request_url": request_url,
        "transaction_time": format_instant(transaction_time),
        "chunk_size": settings.BULK_EXPORT_CHUNK_SIZE,
        "row_ranges": walks_row_ranges(request),
        "organize_output_by": request.organize_output_by,
        "patients_per_file": settings.BULK_EXPORT_PATIENTS_PER_FILE,
        "pages_per_chunk": settings.BULK_EXPORT_PAGES_PER_CHUNK,
        "associated_data": request.associated_data,
    }


def walks_row_ranges(request: ExportRequest) -> bool:
    """Whether the export takes the store nearly whole, as it is: every type or most rows, unfiltered.

    Decided once, at the kick-off, and kept in the job's parameters: the share of rows changes with writes,
    and a `fetch-resources` run again after a lost worker must walk exactly as its first run did.
    """
    if (
        request.level is not Level.SYSTEM
        or request.since is not None
        or request.elements
        or request.type_filters
        or request.organize_output_by
        or request.associated_data
    ):
        return False
    if RESOURCE_TYPES <= set(request.types):  # every row: no need to count them (~250 ms at 1M resources)
        return True
    return share_of_rows(request.types) >= ROW_RANGES_MIN_SHARE


def read_types(level: Level, types: Iterable[str], associated_data: str | None) -> list[str]:
    """The types an export reads from the store: its `_type`s, Provenance when it adds associated data, and Group
    at group level (the Group's members are read as of transactionTime, from its history once it changed)."""
    return sorted({*types, *(["Provenance"] if associated_data else []), *(["Group"] if level is Level.GROUP else [])})

"""Loading a chunk of NDJSON lines: the work of the `load-resources` step, and of `load_fhir` inline.

Each line is parsed and checked as the REST API checks a PUT (a known type, an id, sound references;
R4B validation when FHIR_FULL_VALIDATION, unless BULK_IMPORT_VALIDATION=structure), its references resolved,
and the good ones written in set-based batches through `storage.save_changed_resources` (COPY of resources
and index rows; with FHIR_INDEX_IN_DATABASE the built-in search parameters' rows extracted inside PostgreSQL
instead; one short transaction per batch; unchanged content makes no new version). A bad line never stops the
others: it becomes an `Issue` naming its file and line. So does a line the importer may not write (a
SearchParameter, without the authority to manage them: `fhirstore.authority`), refused here and again by
`storage`.

References:
- `urn:uuid:<id>` → `Type/<id>` when the import set (its staged ids) or the store has exactly one
  resource with that id — what real exports (SMART's bulk-data server) contain.
- conditional `Type?query` → `Type/id` of the one match. None yet may mean the target is in a chunk not
  loaded yet: with `defer_unresolved`, such lines come back as `deferred`, for a later step that runs
  once every chunk has loaded. Several matches is an error.
- anything else that is not a literal, absolute or contained reference is stored verbatim and counted
  as a warning (an error with BULK_IMPORT_UNRESOLVED_REFERENCE_IS_ERROR).
"""

from __future__ import annotations

import gc
import itertools
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from django.conf import settings
from django.db import DatabaseError, connection, transaction

from fhirjobs.bulkimport.models import StagedId
from fhirstore.authority import WriteAuthority
from fhirstore.exceptions import FhirStoreError, InvalidRequest, PreconditionFailed
from fhirstore.references import (
    is_conditional_reference,
    reference_elements,
    reference_problem,
)
from fhirstore.resource_types import RESOURCE_TYPES
from fhirstore.search import find_logical_ids
from fhirstore.storage import StoredVersion, Write, save_changed_resources
from fhirstore.validation import (
    NUL_ESCAPE_REFUSED,
    check_resource,
    check_resource_type,
    holds_nul_escape,
    refused_by_the_database,
)

URN_UUID = "urn:uuid:"
RESOLVED_REFERENCE_MEMO = 100_000
_import_memo: tuple[uuid.UUID | None, dict[str, str]] = (None, {})  # (import, {conditional reference: Type/id})
# `{"resourceType":"T","id":"I"` at the start of a line, as exports write it: staging reads no further.
_HEAD = re.compile(rb'\{\s*"resourceType"\s*:\s*"([A-Za-z]{1,64})"\s*,\s*"id"\s*:\s*"([A-Za-z0-9\-.]{1,64})"')
WRITE_BATCH_SIZE = 1000  # resources per write transaction: ~0.1-0.2 s, short enough not to stall the API
MAX_WARNING_SAMPLES = 20  # warnings quoted in a report; the rest are counted


@dataclass(frozen=True)
class SourceLine:
    """One NDJSON line and where it came from; `content` None for a line too long to keep."""

    file: str
    number: int
    content: bytes | None


@dataclass(frozen=True)
class Issue:
    file: str
    line: int | None
    message: str


@dataclass
class ChunkOutcome:
    """What loading some lines did: per type loaded / unchanged / failed, warnings, issues, deferred lines."""

    counts: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    warnings: int = 0
    warning_samples: list[str] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    deferred: list[SourceLine] = field(default_factory=list)

    def fail(self, line: SourceLine, message: str, resource_type: str = "unknown") -> None:
        self.counts[resource_type]["failed"] += 1
        self.issues.append(Issue(line.file, line.number, message))

    def warn(self, message: str) -> None:
        self.warnings += 1
        if len(self.warning_samples) < MAX_WARNING_SAMPLES:
            self.warning_samples.append(message)

    def summary(self) -> dict[str, Any]:
        """JSON for a chunk (and, merged, for the report): no issues or deferred lines, those travel apart."""
        return {
            "counts": {resource_type: dict(counter) for resource_type, counter in sorted(self.counts.items())},
            "warnings": self.warnings,
            "warning_samples": self.warning_samples,
        }


def merge_summaries(summaries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    counts: dict[str, Counter] = defaultdict(Counter)
    warnings, samples = 0, []
    for summary in summaries:
        for resource_type, counter in summary["counts"].items():
            counts[resource_type].update(counter)
        warnings += summary["warnings"]
        samples.extend(summary["warning_samples"][: MAX_WARNING_SAMPLES - len(samples)])
    return {
        "counts": {
            resource_type: {kind: counts[resource_type][kind] for kind in ("loaded", "unchanged", "failed")}
            for resource_type in sorted(counts)
        },
        "warnings": warnings,
        "warning_samples": samples,
    }


@dataclass
class _Parsed:
    line: SourceLine
    resource: dict
    references: list[dict]


def load_lines(
    lines: Iterable[SourceLine],
    *,
    import_id: uuid.UUID | None,
    authority: WriteAuthority,
    defer_unresolved: bool = False,
    outcome: ChunkOutcome | None = None,
    record_writes: bool = False,
) -> ChunkOutcome:
    """Parse, check, resolve and write these lines, WRITE_BATCH_SIZE at a time (only those are held parsed),
    with the importer's `authority`. `record_writes`: note each version written as the import's (`ImportWrite`,
    for a Bulk Submit import, which may be undone), in the batch's transaction."""
    recorded_as = import_id if record_writes else None
    outcome = outcome or ChunkOutcome()
    resolver = _ConditionalResolver(import_id)
    with _cycle_collector_paused():
        remaining = iter(lines)
        while some_lines := list(itertools.islice(remaining, WRITE_BATCH_SIZE)):
            parsed = [item for item in (_parse(line, outcome, authority) for line in some_lines) if item is not None]
            targets = urn_uuid_targets(
                import_id,
                {
                    element["reference"][len(URN_UUID) :]
                    for item in parsed
                    for element in item.references
                    if element["reference"].startswith(URN_UUID)
                },
            )
            ready = [item for item in parsed if _resolve_and_check(item, targets, resolver, outcome, defer_unresolved)]
            for batch in _unique_batches(ready):
                _write(batch, outcome, authority, recorded_as)
    return outcome


@contextmanager
def _cycle_collector_paused() -> Iterator[None]:
    """Python's cycle collector off while a chunk loads: parsing and indexing a chunk allocate some hundred
    thousand dicts, lists and tuples, which set off collections that walk them all again and again (a fifth
    of the load's CPU, measured) only to find that refcounting frees them. JSON trees hold no cycles; the
    few a chunk may make are collected once it is done."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _parse(line: SourceLine, outcome: ChunkOutcome, authority: WriteAuthority) -> _Parsed | None:
    if line.content is None:
        outcome.fail(
            line, f"the line is longer than {settings.BULK_IMPORT_MAX_LINE_BYTES} bytes (BULK_IMPORT_MAX_LINE_BYTES)"
        )
        return None
    if not line.content.strip():
        return None
    try:
        resource = orjson.loads(line.content)
    except orjson.JSONDecodeError as error:
        outcome.fail(line, f"not valid JSON: {error}")
        return None
    if holds_nul_escape(line.content):
        outcome.fail(line, NUL_ESCAPE_REFUSED, resource.get("resourceType") if isinstance(resource, dict) else None)
        return None
    try:
        resource = check_resource_type(resource)
        if "id" not in resource:
            raise InvalidRequest("the resource has no id (bulk data keeps the ids it was exported with)")
        authority.check([resource["resourceType"]])
    except FhirStoreError as error:
        resource_type = resource.get("resourceType") if isinstance(resource, dict) else None
        outcome.fail(line, error.message, resource_type if isinstance(resource_type, str) else "unknown")
        return None
    return _Parsed(line, resource, reference_elements(resource))


def urn_uuid_targets(import_id: uuid.UUID | None, ids: set[str]) -> dict[str, str | None]:
    """`{id: type}` for the ids one resource of the import set or of the store has; None when several do."""
    if not ids:
        return {}
    found: dict[str, set[str]] = defaultdict(set)
    if import_id is not None:
        for logical_id, resource_type in StagedId.objects.filter(import_id=import_id, logical_id__in=ids).values_list(
            "logical_id", "resource_type"
        ):
            found[logical_id].add(resource_type)
    missing = [logical_id for logical_id in ids if logical_id not in found]
    if missing:
        with connection.cursor() as cursor:  # every type: the unique (type, id) index answers each pair
            cursor.execute(
                "SELECT logical_id, resource_type FROM fhirstore_resource WHERE resource_type = ANY(%s)"
                " AND logical_id = ANY(%s) AND NOT deleted",
                [sorted(RESOURCE_TYPES), missing],
            )
            for logical_id, resource_type in cursor.fetchall():
                found[logical_id].add(resource_type)
    return {logical_id: next(iter(types)) if len(types) == 1 else None for logical_id, types in found.items()}


class _Unresolved(Exception):
    """A conditional reference matched nothing (yet)."""


class _ConditionalResolver:
    """Conditional references, each looked up once per chunk; a single match is also remembered for the
    rest of the import in this process (Synthea repeats a few hundred practitioners and organizations
    throughout), in a memo bounded by RESOLVED_REFERENCE_MEMO."""

    def __init__(self, import_id: uuid.UUID | None) -> None:
        global _import_memo
        if _import_memo[0] != import_id or len(_import_memo[1]) >= RESOLVED_REFERENCE_MEMO or import_id is None:
            _import_memo = (import_id, {})
        self._found = _import_memo[1]
        self._memo: dict[str, str | FhirStoreError | None] = {}

    def __call__(self, reference: str) -> str:
        found = self._found.get(reference)
        if found is not None:
            return found
        if reference not in self._memo:
            try:
                matches = find_logical_ids(reference)
            except FhirStoreError as error:
                matches, self._memo[reference] = [], error
            else:
                if len(matches) > 1:
                    self._memo[reference] = PreconditionFailed(
                        f"Conditional reference {reference!r} matches more than one resource; it must match one"
                    )
                else:
                    self._memo[reference] = f"{reference.partition('?')[0]}/{matches[0]}" if matches else None
                    if matches:
                        self._found[reference] = self._memo[reference]
        result = self._memo[reference]
        if isinstance(result, FhirStoreError):
            raise result
        if result is None:
            raise _Unresolved(reference)
        return result


def _resolve_and_check(
    item: _Parsed,
    targets: dict[str, str | None],
    resolve_conditional: _ConditionalResolver,
    outcome: ChunkOutcome,
    defer_unresolved: bool,
) -> bool:
    resource, line = item.resource, item.line
    resource_type = resource["resourceType"]
    checked, warnings = [], []
    try:
        for element in item.references:
            reference = element["reference"]
            if reference.startswith(URN_UUID):
                target_type = targets.get(reference[len(URN_UUID) :])
                if target_type is not None:
                    element["reference"] = f"{target_type}/{reference[len(URN_UUID) :]}"
                    checked.append(element)
                    continue
            elif is_conditional_reference(reference):
                element["reference"] = resolve_conditional(reference)
                checked.append(element)
                continue
            problem = reference_problem(reference, within="the import")
            if problem is None:
                checked.append(element)
            elif settings.BULK_IMPORT_UNRESOLVED_REFERENCE_IS_ERROR:
                raise InvalidRequest(f"{resource_type}/{resource['id']}: {problem}")
            else:
                warnings.append(
                    f"{line.file}:{line.number}: {resource_type}/{resource['id']}: {problem} (kept as it is)"
                )
        check_resource(
            resource, checked, full=settings.FHIR_FULL_VALIDATION and settings.BULK_IMPORT_VALIDATION == "full"
        )
    except _Unresolved as unresolved:
        if defer_unresolved:
            outcome.deferred.append(line)
        else:
            outcome.fail(line, f"Conditional reference {unresolved.args[0]!r} matches no resource", resource_type)
        return False
    except FhirStoreError as error:
        outcome.fail(line, error.message, resource_type)
        return False
    for warning in warnings:
        outcome.warn(warning)
    return True


def _unique_batches(items: Sequence[_Parsed]) -> Iterable[list[_Parsed]]:
    """Batches of at most WRITE_BATCH_SIZE with each resource once: a repeated id is the next version."""
    batch: list[_Parsed] = []
    keys: set[tuple[str, str]] = set()
    for item in items:
        key = (item.resource["resourceType"], item.resource["id"])
        if key in keys or len(batch) >= WRITE_BATCH_SIZE:
            yield batch
            batch, keys = [], set()
        batch.append(item)
        keys.add(key)
    if batch:
        yield batch


def _write(
    batch: list[_Parsed], outcome: ChunkOutcome, authority: WriteAuthority, recorded_as: uuid.UUID | None
) -> None:
    """One transaction for the batch; when the database refuses it, one per resource to find the bad ones."""
    try:
        with transaction.atomic():
            written, unchanged = save_changed_resources(
                [Write(item.resource) for item in batch],
                authority=authority,
                index_in_database=settings.FHIR_INDEX_IN_DATABASE,
            )
            _record(recorded_as, written)
    except (FhirStoreError, DatabaseError):
        for item in batch:
            _write_alone(item, outcome, authority, recorded_as)
        return
    for item in batch:
        key = (item.resource["resourceType"], item.resource["id"])
        outcome.counts[key[0]]["unchanged" if key in unchanged else "loaded"] += 1


def _write_alone(
    item: _Parsed, outcome: ChunkOutcome, authority: WriteAuthority, recorded_as: uuid.UUID | None
) -> None:
    resource_type = item.resource["resourceType"]
    try:
        with transaction.atomic():
            written, unchanged = save_changed_resources(
                [Write(item.resource)], authority=authority, index_in_database=settings.FHIR_INDEX_IN_DATABASE
            )
            _record(recorded_as, written)
    except FhirStoreError as error:
        outcome.fail(item.line, error.message, resource_type)
    except DatabaseError as error:
        outcome.fail(item.line, refused_by_the_database(error), resource_type)
    else:
        outcome.counts[resource_type]["unchanged" if unchanged else "loaded"] += 1


def _record(import_id: uuid.UUID | None, written: Sequence[StoredVersion]) -> None:
    """The versions just written, as the import's: one COPY for the batch (no round trip per resource)."""
    if import_id is None or not written:
        return
    with (
        connection.cursor() as cursor,
        connection.wrap_database_errors,
        cursor.copy(
            "COPY bulkimport_importwrite (import_id, resource_type, logical_id, version_id) FROM STDIN"
        ) as copy,
    ):
        for version in written:
            copy.write_row((import_id, version.resource_type, version.logical_id, version.version_id))


def stage_ids(import_id: uuid.UUID, lines: Iterable[bytes]) -> int:
    """Note the (type, id) of each parseable line in the import set; a rerun notes them again harmlessly."""
    types, ids = [], []
    for content in lines:
        head = _HEAD.match(content)
        if head:
            types.append(head[1].decode())
            ids.append(head[2].decode())
            continue
        try:
            resource = orjson.loads(content)
            resource_type, logical_id = resource["resourceType"], resource["id"]
        except (orjson.JSONDecodeError, TypeError, KeyError):
            continue  # the load step reports it
        if (
            isinstance(resource_type, str)
            and isinstance(logical_id, str)
            and len(logical_id) <= 64
            and len(resource_type) <= 64
        ):
            types.append(resource_type)
            ids.append(logical_id)
    if ids:
        with connection.cursor() as cursor:  # one JSON parameter: psycopg quotes a text[] element by element
            cursor.execute(
                "INSERT INTO bulkimport_stagedid (import_id, logical_id, resource_type)"
                " SELECT %s, item->>0, item->>1 FROM jsonb_array_elements(%s::jsonb) AS s(item)"
                " ON CONFLICT DO NOTHING",
                [import_id, orjson.dumps(list(zip(ids, types))).decode()],
            )
    return len(ids)


def drop_staged_ids(import_id: uuid.UUID) -> None:
    StagedId.objects.filter(import_id=import_id).delete()

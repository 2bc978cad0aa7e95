"""Bulk loading: NDJSON files (bulk-export layout, `Type.000.ndjson`) and transaction bundles (Synthea's).

The store's part of loading: the report of a load (`LoadReport`, `BadInput`), the order files load in
(Organizations, Locations and Practitioners before the resources that point at them), bundle files (read
whole, one patient each, processed as transactions), and `BulkLoader`, which writes resources made in
Python (`generate_fhir`) in batches through `storage.save_resources`. NDJSON files are the bulk import's
business: `fhirjobs.bulkimport.inline.load_paths` runs its steps on them and loads bundles with this module.
These are the shell's loads (run by whoever may run the server): they write with the server's own authority
(`authority.SERVER`), SearchParameters included.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from django.core.management.base import BaseCommand
from django.db import DatabaseError, transaction

from fhirstore.authority import SERVER
from fhirstore.bundles import process_bundle
from fhirstore.exceptions import FhirStoreError, InvalidRequest, PreconditionFailed
from fhirstore.interactions import prepare_resource
from fhirstore.references import is_conditional_reference
from fhirstore.search import find_logical_ids, resolve_conditional_reference
from fhirstore.storage import Write, save_resources
from fhirstore.validation import check_resource_type, refused_by_the_database

# Resources per write transaction: ~0.1 s of COPY for Synthea-sized resources; larger batches gain little.
LOAD_BATCH_SIZE = 1000
# Conditional references remembered while loading (Synthea repeats a few hundred practitioners and
# organizations millions of times); the memo is cleared when it grows past this, keeping memory bounded.
RESOLVED_REFERENCE_MEMO = 100_000
# Referenced types first; anything else after them, by name.
LOAD_ORDER = (
    "Organization",
    "Location",
    "Practitioner",
    "PractitionerRole",
    "Medication",
    "Patient",
    "Group",
    "Device",
    "Encounter",
)
REFERENCE_DATA_BUNDLES = ("hospitalInformation", "practitionerInformation")  # Synthea's shared bundles


@dataclass(frozen=True)
class BadInput:
    path: str
    line: int | None  # None for a whole file (a bundle)
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}" if self.line is not None else f"{self.path}: {self.reason}"


@dataclass
class LoadReport:
    counts: Counter = field(default_factory=Counter)  # resources stored (or found unchanged), by type
    bad: list[BadInput] = field(default_factory=list)
    unchanged: Counter = field(default_factory=Counter)  # of `counts`: already stored with the same content
    warnings: list[str] = field(default_factory=list)  # references kept verbatim (a sample)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class BulkLoader:
    """Collects checked resources and writes them in batches; use as a context manager (flushes at exit)."""

    def __init__(self, report: LoadReport | None = None, batch_size: int = LOAD_BATCH_SIZE):
        self.report = report or LoadReport()
        self.batch_size = batch_size
        self._pending: list[tuple[dict, str, int | None]] = []
        self._pending_keys: set[tuple[str, str]] = set()
        self._resolved: dict[str, str] = {}
        self._unresolvable: dict[str, PreconditionFailed] = {}  # until the next flush adds resources

    def __enter__(self) -> BulkLoader:
        return self

    def __exit__(self, *exc_info) -> None:
        if exc_info[0] is None:
            self.flush()

    def add_json_line(self, line: bytes, path: str, line_number: int | None) -> None:
        """Parse, check and queue one NDJSON line; a bad one is reported, not raised."""
        try:
            resource = json.loads(line)
        except ValueError as error:
            self.report.bad.append(BadInput(path, line_number, f"not valid JSON: {error}"))
            return
        self.add(resource, path, line_number)

    def add(self, resource: object, path: str, line_number: int | None) -> None:
        """Check and queue one resource (it keeps its id); a bad one is reported, not raised."""
        try:
            resource = check_resource_type(resource)
            if "id" not in resource:
                raise InvalidRequest("the resource has no id (bulk data keeps the ids it was exported with)")
            prepare_resource(resource, self._resolve)
        except FhirStoreError as error:
            self.report.bad.append(BadInput(path, line_number, error.message))
            return
        key = (resource["resourceType"], resource["id"])
        if key in self._pending_keys or len(self._pending) >= self.batch_size:
            self.flush()  # a repeated id becomes the next version in the next batch
        self._pending.append((resource, path, line_number))
        self._pending_keys.add(key)

    def flush(self) -> None:
        """Write what is queued: one transaction, or one per resource when the batch as a whole fails."""
        pending, self._pending, self._pending_keys = self._pending, [], set()
        if not pending:
            return
        self._unresolvable.clear()
        try:
            with transaction.atomic():
                save_resources([Write(resource) for resource, _, _ in pending], authority=SERVER)
            self.report.counts.update(resource["resourceType"] for resource, _, _ in pending)
        except (FhirStoreError, DatabaseError):
            for resource, path, line_number in pending:
                self._write_alone(resource, path, line_number)

    def _write_alone(self, resource: dict, path: str, line_number: int | None) -> None:
        try:
            with transaction.atomic():
                save_resources([Write(resource)], authority=SERVER)
            self.report.counts[resource["resourceType"]] += 1
        except FhirStoreError as error:
            self.report.bad.append(BadInput(path, line_number, error.message))
        except DatabaseError as error:
            self.report.bad.append(BadInput(path, line_number, refused_by_the_database(error)))

    def _resolve(self, reference: str) -> str | None:
        if not is_conditional_reference(reference):
            return None
        if reference in self._unresolvable:
            raise self._unresolvable[reference]
        if reference not in self._resolved:
            if len(self._resolved) >= RESOLVED_REFERENCE_MEMO:
                self._resolved.clear()
            try:
                if self._pending and not find_logical_ids(reference, limit=1):
                    self.flush()  # the target may be waiting in this very batch
                self._resolved[reference] = resolve_conditional_reference(reference)
            except PreconditionFailed as error:
                self._unresolvable[reference] = error
                raise
        return self._resolved[reference]


def load_bundle_file(path: Path, report: LoadReport) -> None:
    """Process one JSON file: a transaction/batch Bundle, or a single resource written as one."""
    try:
        with _open(path) as stream:
            document = json.load(stream)
    except (ValueError, OSError) as error:
        report.bad.append(BadInput(str(path), None, f"not valid JSON: {error}"))
        return
    if isinstance(document, dict) and document.get("resourceType") != "Bundle":
        with BulkLoader(report) as loader:
            loader.add(document, str(path), None)
        return
    try:
        response = process_bundle(document, authority=SERVER)
    except FhirStoreError as error:
        report.bad.append(BadInput(str(path), None, error.message))
        return
    for request_entry, response_entry in zip(document["entry"], response["entry"]):
        status = response_entry.get("response", {}).get("status", "")
        method = request_entry["request"]["method"]
        if status.startswith("201") or (method == "PUT" and status.startswith("200")):  # 200 POST: matched
            report.counts[request_entry["resource"]["resourceType"]] += 1
        elif not status.startswith(("200", "201", "204")):
            issue = response_entry["response"].get("outcome", {}).get("issue", [{}])[0]
            report.bad.append(BadInput(str(path), None, f"{status}: {issue.get('diagnostics', '')}"))


def ordered_input_files(paths: Iterable[str | Path], skipped: list[tuple[Path, str]] | None = None) -> list[Path]:
    """The files to load (directories expanded), referenced types first; InvalidRequest for a missing path.

    A Bulk Data export's own bookkeeping in a directory (its manifest, a client's log) holds no resources: it is
    left out, and listed in `skipped` with why."""
    files = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(p for p in path.iterdir() if p.is_file() and _is_loadable(p))
        elif path.is_file():
            files.append(path)
        else:
            raise InvalidRequest(f"{path} does not exist")
    kept = []
    for path in files:
        why = bulk_data_bookkeeping(path)
        if why is None:
            kept.append(path)
        elif skipped is not None:
            skipped.append((path, why))
    return sorted(kept, key=_load_rank)


BOOKKEEPING_PEEK_BYTES = 64 * 1024  # enough for a manifest's first keys or a log's first line


def bulk_data_bookkeeping(path: Path) -> str | None:
    """Why the file is a Bulk Data export's bookkeeping rather than resources, or None: a manifest
    (`transactionTime` and `output`, no `resourceType`) or a client's log (`log.ndjson`, lines of events)."""
    if not path.name.startswith(("manifest", "log")):
        return None
    try:
        with _open(path) as stream:
            head = stream.read(BOOKKEEPING_PEEK_BYTES)
    except OSError:
        return None
    if b'"resourceType"' in head.split(b"\n", 1)[0]:
        return None
    if path.name.startswith("manifest") and b'"transactionTime"' in head and b'"output"' in head:
        return "a Bulk Data export manifest, not resources"
    if is_ndjson(path) and path.name.startswith("log"):
        return "a Bulk Data client's log, not resources"
    return None


def _load_rank(path: Path) -> tuple:
    name = path.name
    if is_ndjson(path):
        resource_type = name.split(".")[0]
        rank = LOAD_ORDER.index(resource_type) if resource_type in LOAD_ORDER else len(LOAD_ORDER)
        return 0, rank, name
    return 1, 0 if name.startswith(REFERENCE_DATA_BUNDLES) else 1, name


def is_ndjson(path: Path) -> bool:
    return path.name.endswith((".ndjson", ".ndjson.gz"))


def _is_loadable(path: Path) -> bool:
    return path.name.endswith((".ndjson", ".ndjson.gz", ".json", ".json.gz"))


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")


def print_report(command: BaseCommand, report: LoadReport, seconds: float) -> None:
    """What a load command prints: counts by type, the rate, then each warning and each rejected input."""
    for resource_type, count in sorted(report.counts.items()):
        unchanged = report.unchanged[resource_type]
        command.stdout.write(f"{resource_type:<28}{count:>10}" + (f"  ({unchanged} unchanged)" if unchanged else ""))
    rate = report.total / seconds if seconds > 0 else 0.0
    command.stdout.write(f"{'total':<28}{report.total:>10}  in {seconds:.1f} s ({rate:,.0f} resources/s)")
    for warning in report.warnings:
        command.stderr.write(f"warning {warning}")
    for bad in report.bad:
        command.stderr.write(f"rejected {bad}")

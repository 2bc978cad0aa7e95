"""The steps of the TERMINOLOGY_UPLOAD job, written against the batch job-author API only.

load-concepts → build-closure → make-current (a gated job: each step starts once the one before has
completed everywhere, so the closure is built from every link, and the version is made current once).

- `load-concepts` streams the files through the system's loader and writes them, one transaction per
  `chunk_concepts` concepts (COPY: the rows are new). The records go straight from the reader to the tables:
  no chunk data through the engine (186 chunks of JSON for a SNOMED CT edition took most of the parse's
  time). Run again (a worker lost), it reads the files again and skips the chunks already written (the
  same files give the same chunks).
- `build-closure` (one chunk): the closure level by level, set-based — the concepts whose parents are all
  closed get themselves ∪ their parents' rows, one statement per level (≤ `CLOSURE_STATEMENT_CONCEPTS`
  concepts), each its own transaction, until none is left; run again, it goes on from the last level
  committed. A reader that knows each concept's ancestors (a strict tree read top-down, as ICD-10-CM) has
  them written with the concepts: they are closed already.
- `make-current` (the reduction) counts what was written and makes the version current in one short
  transaction, unless the upload was asked not to; it drops the inline files.

VALUESET_EXPAND (pre-expansion): find-stale-value-sets → expand-value-set, one chunk per stale ValueSet, many
at once; started by the clustered scheduled job `expand_stale_value_sets` (periodic.py) when any is stale.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

from batch.api import DataSink, JobFailed, StepContext
from fhirjobs.terminology.loaders import loader_for
from fhirjobs.terminology.sources import open_file
from fhirstore.exceptions import FhirStoreError
from fhirstore.terminology import storage, valuesets
from fhirstore.terminology.exceptions import InvalidTerminologyFile
from fhirstore.terminology.records import ReleaseFacts

TERMINOLOGY_UPLOAD_JOB = "TERMINOLOGY_UPLOAD"
CLOSURE_STATEMENT_CONCEPTS = 50_000  # concepts per closure statement: up to ~2M rows at SNOMED CT's deepest level


def started_by_an_earlier_release(context: StepContext, *_: Any) -> Any:
    """Every step of TERMINOLOGY_UPLOAD v1 (parse → write-concepts → build-closure → make-current, chunk JSON
    between them), kept registered so a v1 upload in flight at an upgrade fails at once with a reason instead of
    waiting for a worker that knows its version (docs/batch.md, *Versions*): its steps are gone with v2's rework."""
    raise JobFailed(
        "this upload was started by an earlier release (TERMINOLOGY_UPLOAD v1), whose steps this release no "
        "longer has: upload the files again"
    )


def load_concepts(context: StepContext, sink: DataSink) -> int:
    """Read every file and write its concepts, `chunk_concepts` per transaction; label the version as the
    files declare; one chunk for the closure step."""
    parameters = context.parameters
    version_id = parameters["version_id"]
    loader, facts = loader_for(parameters["system"]), ReleaseFacts()
    files = [
        (reference.get("name") or reference.get("url") or "", partial(open_file, reference))
        for reference in parameters["files"]
    ]
    size, batch, read = parameters["chunk_concepts"], [], 0
    try:
        for record in loader.read(files, facts):
            batch.append(record)
            read += 1
            if len(batch) >= size:
                storage.write_concepts(version_id, batch, again_skips=True)
                context.report_progress()
                context.check_cancelled()
                batch = []
    except InvalidTerminologyFile as error:
        raise JobFailed(error.message) from None
    if batch:
        storage.write_concepts(version_id, batch, again_skips=True)
    if read == 0:
        raise JobFailed("the files hold no concepts")
    storage.label_version(version_id, parameters["version"] or facts.version, facts.name)
    sink.accept({"concepts": read})
    return read


def build_closure(context: StepContext, sink: DataSink) -> int:
    """Every concept's closure rows, level by level; then those the levels cannot reach (a cycle)."""
    version_id = context.parameters["version_id"]
    dangling = storage.dangling_links(version_id)
    if dangling:
        raise JobFailed(
            "links to codes the files do not define: " + ", ".join(f"{child} → {parent}" for child, parent in dangling)
        )

    def moved(_: int) -> None:
        context.report_progress()
        context.check_cancelled()

    closed = storage.close_levels(version_id, CLOSURE_STATEMENT_CONCEPTS, after_each=moved)
    while batch := storage.close_remaining(version_id, context.parameters["chunk_concepts"]):
        closed += batch
        moved(batch)
    sink.accept({"concepts": closed})
    return closed


def make_current(context: StepContext, inputs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The report; the version made current (when asked) with its counts."""
    parameters = context.parameters
    version_id = parameters["version_id"]
    concepts, closure_rows = storage.counts(version_id)
    if parameters["make_current"]:
        storage.make_current(version_id, concepts=concepts, closure_rows=closure_rows)
    else:
        storage.record_counts(version_id, concepts=concepts, closure_rows=closure_rows)
    storage.drop_uploaded_files([f["stored"] for f in parameters["files"] if f.get("stored")])
    version = storage.version_row(version_id)
    return {
        "system": version.system,
        "version": version.version,
        "status": version.status,
        "concepts": concepts,
        "closureRows": closure_rows,
    }


VALUESET_EXPAND_JOB = "VALUESET_EXPAND"
STALE_PER_RUN = 10_000  # ValueSets one VALUESET_EXPAND run picks up; the next run takes the rest


def find_stale_value_sets(context: StepContext, sink: DataSink) -> int:
    """One chunk per stored ValueSet whose expansion is missing or stale, in id order."""
    stale = valuesets.stale_value_sets(STALE_PER_RUN)
    for logical_id in stale:
        sink.accept({"id": logical_id})
    return len(stale)


def expand_value_set(context: StepContext, sink: DataSink) -> int:
    """Expand one ValueSet and store it; one that cannot be expanded is FAILED with its error (a warning
    here: the other ValueSets go on)."""
    try:
        value_set = valuesets.stored_value_set(logical_id=context.data["id"])
        valuesets.store_expansion(value_set)
    except FhirStoreError as error:
        context.add_warning(f"ValueSet/{context.data['id']}: {error.message}")
    return 1


TERMINOLOGY_DELETE_JOB = "TERMINOLOGY_DELETE"
DELETE_BATCH_ROWS = 10_000  # rows per DELETE statement and transaction: well under a second each


def plan_deletion(context: StepContext, sink: DataSink) -> int:
    """The version stops answering (DELETING); one chunk per table of its rows."""
    storage.start_deleting(context.parameters["version_id"])
    for table in storage.VERSION_TABLES:
        sink.accept({"table": table})
    return 0


def delete_rows(context: StepContext, sink: DataSink) -> int:
    """Every row of the version in one table, DELETE_BATCH_ROWS per transaction (a re-run finds fewer)."""
    deleted = 0
    while True:
        context.check_cancelled()
        batch = storage.delete_version_rows(context.parameters["version_id"], context.data["table"], DELETE_BATCH_ROWS)
        deleted += batch
        if batch == 0:
            break
    sink.accept({"table": context.data["table"], "rows": deleted})
    return deleted


def forget_version(context: StepContext, inputs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    rows = {item["table"].removeprefix("terminology_"): item["rows"] for item in inputs}
    storage.forget_version(context.parameters["version_id"])
    return {"system": context.parameters["system"], "version": context.parameters["version"], "rowsDeleted": rows}

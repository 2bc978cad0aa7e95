"""The steps of the TERMINOLOGY_UPLOAD job, written against the batch job-author API only.

parse → write-concepts → build-closure → make-current (a gated job: each step starts once the one before
has completed everywhere, so the closure is built from every link, and the version is made current once).

- `parse` streams the files through the system's loader and emits one chunk per `chunk_concepts` concepts
  (the records themselves, as compact JSON: the data travels through PostgreSQL, never a file shared by
  workers), in file order: run again, it emits the same chunks, which the engine ignores.
- `write-concepts` writes one chunk's concepts, designations, properties and links in one transaction
  (idempotent: upserts, and the chunk's own rows replaced) and emits its codes for the closure.
- `build-closure` inserts the closure rows of those codes (`ON CONFLICT DO NOTHING`): chunks run in
  parallel, and one run twice adds nothing. A reader that knows each concept's ancestors (a strict tree read
  top-down, as ICD-10-CM) has them written with the concepts instead; this step then only checks the links.
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
from fhirjobs.terminology.loaders import FileFacts, loader_for
from fhirjobs.terminology.sources import open_file
from fhirstore.exceptions import FhirStoreError
from fhirstore.terminology import storage, valuesets
from fhirstore.terminology.exceptions import InvalidTerminologyFile
from fhirstore.terminology.records import ConceptRecord

TERMINOLOGY_UPLOAD_JOB = "TERMINOLOGY_UPLOAD"


def parse(context: StepContext, sink: DataSink) -> int:
    """Read every file, one chunk per `chunk_concepts` concepts; label the version as the files declare."""
    parameters = context.parameters
    loader, facts = loader_for(parameters["system"]), FileFacts()
    files = [
        (reference.get("name") or reference.get("url") or "", partial(open_file, reference))
        for reference in parameters["files"]
    ]
    size, batch, read = parameters["chunk_concepts"], [], 0
    try:
        for record in loader.read(files, facts):
            batch.append(record.to_json())
            read += 1
            if len(batch) >= size:
                sink.accept({"concepts": batch})
                batch = []
    except InvalidTerminologyFile as error:
        raise JobFailed(error.message) from None
    if batch:
        sink.accept({"concepts": batch})
    if read == 0:
        raise JobFailed("the files hold no concepts")
    storage.label_version(parameters["version_id"], parameters["version"] or facts.version, facts.name)
    return read


def write_concepts(context: StepContext, sink: DataSink) -> int:
    records = [ConceptRecord.from_json(item) for item in context.data["concepts"]]
    written = storage.write_concepts(context.parameters["version_id"], records)
    sink.accept({"codes": [record.code for record in records], "closed": storage.closure_known(records)})
    return written


def build_closure(context: StepContext, sink: DataSink) -> int:
    codes = context.data["codes"]
    dangling = storage.dangling_links(context.parameters["version_id"], codes)
    if dangling:
        raise JobFailed(
            "links to codes the files do not define: " + ", ".join(f"{child} → {parent}" for child, parent in dangling)
        )
    if not context.data.get("closed"):  # the reader knew the ancestors: the rows were written with the concepts
        storage.build_closure(context.parameters["version_id"], codes)
    sink.accept({"concepts": len(codes)})
    return len(codes)


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

"""The steps of the BULK_PATCH job, on the batch job-author API only.

generate-ranges → load-ids (the shared range walk, `fhirjobs.common.ranges`: pages of ids by logical id, the
set fixed by the gate before any page is patched, so a patch that changes what the urls match cannot shift
the walk) → patch → report.

`patch` applies the FHIRPath Patch to one page in one transaction: resources the patch leaves as they were get
no new version; the others are written together, and when that write fails (a concurrent change, a row the
database refuses) they are written again one by one, so one bad resource fails alone and is reported by id.
Each patched resource gets a `PatchedResource` row (unique per job) and the page a `PatchedChunk` row, in the
same transaction: a page run again, or a resource two urls match, is never patched twice. A dry run writes no
resource, only the page's counts and its first diffs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from django.db import DatabaseError, transaction

from batch.api import DataSink, StepContext
from fhirjobs.bulkpatch.models import PatchedChunk, PatchedResource
from fhirstore.authority import WriteAuthority
from fhirstore.exceptions import FhirStoreError
from fhirstore.expunge import forget_searches
from fhirstore.fhirpatch import PatchFailed, apply_patch, parse_patch
from fhirstore.models import Resource
from fhirstore.storage import StoredVersion, Write, save_resources

DIFFS_KEPT = 10  # diffs a dry run reports (each page keeps as many; the report the first of all)
FAILURES_NAMED = 100  # failed resources the report names; the rest are counted
PATCH_AUTHORITY = WriteAuthority(manages_search_parameters=False, caller="a bulk patch")  # no SearchParameters


def patch(context: StepContext, sink: DataSink) -> int:
    """Patch one page; how many resources got a new version (a dry run: would get one)."""
    context.check_cancelled()
    resource_type, ids = context.data["type"], context.data["ids"]
    operations = parse_patch(context.parameters["patch"])
    with transaction.atomic():
        done = PatchedChunk.objects.filter(chunk_id=context.chunk_id).values_list("patched", flat=True).first()
        if done is not None:
            return done
        patched_before = set(
            PatchedResource.objects.filter(
                job_instance_id=context.instance_id, resource_type=resource_type, logical_id__in=ids
            ).values_list("logical_id", flat=True)
        )
        rows = (
            Resource.objects.filter(resource_type=resource_type, logical_id__in=ids, deleted=False)
            .exclude(logical_id__in=patched_before)
            .order_by("logical_id")
            .values_list("version_id", "body")
        )
        failed: dict[str, str] = {}
        changes: list[tuple[dict, dict, int]] = []  # (before, after, version read)
        for version_id, body in rows:
            try:
                patched = apply_patch(body, operations)
            except PatchFailed as error:
                failed[body["id"]] = error.message
                continue
            if _content(patched) != _content(body):
                changes.append((body, patched, version_id))
        unchanged = len(rows) - len(failed) - len(changes)
        if context.parameters["dry_run"]:
            PatchedChunk.objects.create(
                chunk_id=context.chunk_id,
                job_instance_id=context.instance_id,
                resource_type=resource_type,
                patched=len(changes),
                unchanged=unchanged,
                failed=failed,
                diffs=_diffs(changes),
            )
            return len(changes)
        written = _write([Write(after, if_match=version) for _, after, version in changes], failed)
        PatchedResource.objects.bulk_create(
            PatchedResource(
                job_instance_id=context.instance_id,
                resource_type=resource_type,
                logical_id=version.logical_id,
                version_id=version.version_id,
            )
            for version in written
        )
        PatchedChunk.objects.create(
            chunk_id=context.chunk_id,
            job_instance_id=context.instance_id,
            resource_type=resource_type,
            patched=len(written),
            unchanged=unchanged,
            failed=failed,
        )
    return len(written)


def _write(writes: list[Write], failed: dict[str, str]) -> list[StoredVersion]:
    """The writes together; when that fails, one by one, each failure recorded by id in `failed`."""
    try:
        with transaction.atomic():
            return save_resources(writes, authority=PATCH_AUTHORITY)
    except (FhirStoreError, DatabaseError):
        pass
    written = []
    for write in writes:
        try:
            with transaction.atomic():
                written += save_resources([write], authority=PATCH_AUTHORITY)
        except FhirStoreError as error:
            failed[write.resource["id"]] = error.message
        except DatabaseError as error:
            failed[write.resource["id"]] = f"the database refused the patched resource ({error.__class__.__name__})"
    return written


def _content(body: dict) -> dict:
    return {name: value for name, value in body.items() if name != "meta"}


def _diffs(changes: list[tuple[dict, dict, int]]) -> list[dict]:
    """Each changed top-level element of the first changed resources: before and after."""
    diffs = []
    for before, after, _ in changes:
        for name in sorted((set(before) | set(after)) - {"meta"}):
            if before.get(name) != after.get(name):
                diffs.append(
                    {
                        "resource": f"{before['resourceType']}/{before['id']}",
                        "element": name,
                        "before": before.get(name),
                        "after": after.get(name),
                    }
                )
        if len(diffs) >= DIFFS_KEPT:
            return diffs[:DIFFS_KEPT]
    return diffs


def report(context: StepContext, inputs: Iterable[dict]) -> dict:
    """The counts per type, the failures by id and (dry run) the first diffs, from the pages' records."""
    patched: Counter[str] = Counter()
    unchanged, failed, diffs = 0, {}, []
    for chunk in PatchedChunk.objects.filter(job_instance_id=context.instance_id).order_by("resource_type"):
        patched[chunk.resource_type] += chunk.patched
        unchanged += chunk.unchanged
        failed.update({f"{chunk.resource_type}/{logical_id}": message for logical_id, message in chunk.failed.items()})
        diffs += chunk.diffs
    if not context.parameters["dry_run"]:
        forget_searches(sorted(patched))
    return {
        "dry_run": context.parameters["dry_run"],
        "patched": dict(sorted(patched.items())),
        "total": sum(patched.values()),
        "unchanged": unchanged,
        "failed_count": len(failed),
        "failed": dict(sorted(failed.items())[:FAILURES_NAMED]),
        "diffs": diffs[:DIFFS_KEPT],
    }

"""Who refers to a resource, and pointing their references at another one: the store side of Patient `$merge`.

The referrers are found in the reference index, whose key leads with (target_id, target_type): one range scan
however large the store. A reference is rewritten where it names the source literally (`Patient/a`, or a
version of it, `Patient/a/_history/2`): a rewritten resource gets a new version through `save_resources`,
with its index rows, so it stops being a referrer of the source. A resource that no longer refers to the
source is left alone (no new version): a page run again changes nothing twice.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from django.db import connection

from fhirstore.authority import WriteAuthority
from fhirstore.models import Resource
from fhirstore.references import reference_elements
from fhirstore.storage import StoredVersion, Write, save_resources


def referrer_keys(
    target_type: str, target_id: str, *, excluding: Collection[tuple[str, str]] = ()
) -> list[tuple[str, str]]:
    """`(type, id)` of the current resources that refer to `target_type/target_id`, sorted, without `excluding`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT r.resource_type, r.logical_id FROM fhirstore_referenceindex ri"
            " JOIN fhirstore_resource r ON r.id = ri.resource_id"
            " WHERE ri.target_id = %s AND ri.target_type = %s AND NOT r.deleted ORDER BY 1, 2",
            [target_id, target_type],
        )
        return [key for key in cursor.fetchall() if key not in excluding]


def refers_to(reference: str, target: str) -> bool:
    """`reference` names `target` (`Type/id`), its current or any version."""
    return reference == target or reference.startswith(f"{target}/_history/")


def replace_references(
    resource_type: str, logical_ids: Sequence[str], source: str, target: str, *, authority: WriteAuthority
) -> list[StoredVersion]:
    """Point every reference of these resources to `source` (`Type/id`) at `target` instead, each changed
    resource as a new version; in the caller's transaction. Resources gone or no longer referring to `source`
    are skipped. Each write carries the version read (If-Match): a concurrent change fails the page (412), to
    be run again, rather than being overwritten."""
    writes = []
    rows = (
        Resource.objects.filter(resource_type=resource_type, logical_id__in=list(logical_ids), deleted=False)
        .order_by("logical_id")
        .values_list("version_id", "body")
    )
    for version_id, body in rows:
        changed = False
        for element in reference_elements(body):
            if refers_to(element["reference"], source):
                element["reference"] = target
                changed = True
        if changed:
            writes.append(Write(body, if_match=version_id))
    return save_resources(writes, authority=authority)

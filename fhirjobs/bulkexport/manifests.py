"""Partial manifests (Bulk Data STU3 `allowPartialManifests`): the status URL lists the files written so far
while the export runs, then every file once it is done, in manifest pages linked by `link: [{relation: next}]`.

The spec's rules, and how they are kept:
- a manifest lists only files a client can download: an `ExportFile` row exists only once its file is whole
  (`write-to-binaries` points the row at it in the transaction that commits it);
- a manifest, once returned, never changes except for a `link` to a next one: a page is a set of file rows
  (`ExportFile.manifest_page`) fixed when the page is first served; files written later go on a new page,
  which the last served page links to from then on;
- the files of a served page never change: a rerun of a write step rewrites the same file (same id, same
  content: the export reads the store as of its transactionTime) before its row names the new copy;
- every page carries the same fields as the first, apart from `output`, `deleted` and `link`.

Pages are assigned under a lock of the export row (`FOR NO KEY UPDATE`: it does not wait for the write
steps, whose key-share lock it does not conflict with), so two polls never make two pages of the same files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.db import transaction

from fhirjobs.bulkexport.exceptions import ExportNotFound
from fhirjobs.bulkexport.models import BulkExport, ExportFile
from fhirstore.fhirdates import format_instant


def manifest_page(
    export_id: Any, parameters: Mapping[str, Any], *, page: int, page_url: Callable[[int], str], completed: bool
) -> dict[str, Any] | None:
    """Page `page` (from 1) of the export's manifest; None while nothing is written and no page was served yet.

    While the export runs, files written since the last page was served make a new page (of at most
    BULK_EXPORT_MANIFEST_PAGE_FILES files) when that last page is polled again; once it has completed, every
    file left goes on new pages. ExportNotFound for a page that does not exist (yet).
    """
    with transaction.atomic():
        export = BulkExport.objects.select_for_update(no_key=True).filter(id=export_id).first()
        if export is None:
            raise ExportNotFound(f"Export {export_id} is not known")
        pages = export.manifest_pages
        if page < 1 or page > max(pages, 1):
            raise ExportNotFound(f"Manifest page {page} of export {export_id} does not exist (yet)")
        if page == max(pages, 1):  # the newest page: what was written since goes on the next ones
            pages = _new_pages(export, completed=completed)
            if pages == 0:
                return None
        files = list(
            ExportFile.objects.filter(export_id=export_id, manifest_page=page).order_by(
                "resource_type", "created", "id"
            )
        )
    base_url, organized_by = parameters["base_url"], parameters.get("organize_output_by")
    entries: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for file in files:
        entry = {"type": file.resource_type, "url": f"{base_url}/$export-file/{file.id}", "count": file.count}
        if organized_by and not file.deleted:  # a file of Patient blocks holds many types
            del entry["type"]
        entries[file.deleted].append(entry)
    manifest: dict[str, Any] = {
        "transactionTime": format_instant(export.transaction_time),
        "request": export.request_url,
        "requiresAccessToken": True,
        **({"outputOrganizedBy": organized_by} if organized_by else {}),
        "output": entries[False],
        "deleted": entries[True],
        "error": [],
    }
    if page < pages:
        manifest["link"] = [{"relation": "next", "url": page_url(page + 1)}]
    return manifest


def _new_pages(export: BulkExport, *, completed: bool) -> int:
    """Put the files no page lists yet on new pages (one while running, as many as needed once completed);
    the export's page count after."""
    page_files = settings.BULK_EXPORT_MANIFEST_PAGE_FILES
    unlisted = ExportFile.objects.filter(export_id=export.id, manifest_page__isnull=True).order_by("created", "id")
    pages = export.manifest_pages
    while True:
        ids = list(unlisted.values_list("id", flat=True)[:page_files])
        if not ids and not (completed and pages == 0):  # a completed export with no file has one empty page
            break
        pages += 1
        ExportFile.objects.filter(id__in=ids).update(manifest_page=pages)
        if not completed or len(ids) < page_files:
            break
    if pages != export.manifest_pages:
        BulkExport.objects.filter(id=export.id).update(manifest_pages=pages)
    return pages

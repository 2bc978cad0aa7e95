"""Writing a code system version: the statements an upload runs, each one short transaction.

An upload creates a BUILDING version, writes its concepts chunk by chunk (`write_concepts`: COPY, the
rows being new), then builds the closure level by level (`close_levels`), then makes
it current (`make_current`). Every write is idempotent, so a chunk run twice (a worker killed after its
commit, before the engine recorded it) leaves the same rows: a chunk whose concepts are already there is
upserted and its designations, properties and links replaced; a concept's closure rows are written in one
statement with its own row (ancestor = descendant), which marks it closed. Readers never see a BUILDING
version unless they name it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import timedelta

from django.db import connection, transaction
from django.db.models.functions import Now

from fhirstore.authority import CLIENT
from fhirstore.exceptions import FhirStoreError, InvalidRequest
from fhirstore.storage import Write, save_changed_resources
from fhirstore.terminology.models import (
    Closure,
    CodeSystemVersion,
    Concept,
    ExpansionStatus,
    ParentLink,
    UploadedFile,
    ValueSetExpansion,
    VersionStatus,
)
from fhirstore.terminology.records import ConceptRecord

# A chunk written again (a re-run whose chunk is partly there, or a delta): each table's rows as column arrays,
# in `_chunk_rows`' order; concepts upserted, their other rows deleted beforehand, links and closure rows kept.
REWRITE_SQL = {
    "concepts": """
INSERT INTO terminology_concept (code_system_version_id, code, display, abstract)
SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::bool[])
ON CONFLICT (code_system_version_id, code) DO UPDATE SET display = excluded.display, abstract = excluded.abstract
""",
    "designations": """
INSERT INTO terminology_designation (code_system_version_id, code, value, language, use_system, use_code)
SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[])
""",
    "properties": """
INSERT INTO terminology_conceptproperty (code_system_version_id, code, property, value, type, system)
SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[])
""",
    "links": """
INSERT INTO terminology_parentlink (code_system_version_id, child, parent)
SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[])
ON CONFLICT DO NOTHING
""",
    "closure": """
INSERT INTO terminology_closure (code_system_version_id, ancestor, descendant)
SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[])
ON CONFLICT DO NOTHING
""",
}
# Every ancestor of the chunk's concepts (and each concept itself), walking the links up; UNION, not
# UNION ALL, so a concept reached by several paths (SNOMED's multiple parents) or a cycle is walked once.
BUILD_CLOSURE_SQL = """
WITH RECURSIVE up(descendant, ancestor) AS (
    SELECT code COLLATE "C", code COLLATE "C" FROM unnest(%(codes)s::text[]) AS chunk(code)
    UNION
    SELECT up.descendant, link.parent
    FROM up JOIN terminology_parentlink link
      ON link.code_system_version_id = %(version)s AND link.child = up.ancestor
)
INSERT INTO terminology_closure (code_system_version_id, ancestor, descendant)
SELECT %(version)s, ancestor, descendant FROM up
ON CONFLICT DO NOTHING
"""
DANGLING_CHUNK_LINKS_SQL = """
SELECT link.child, link.parent FROM terminology_parentlink link
WHERE link.code_system_version_id = %(version)s AND link.child = ANY(%(codes)s::text[])
  AND NOT EXISTS (SELECT 1 FROM terminology_concept c
                  WHERE c.code_system_version_id = %(version)s AND c.code = link.parent)
LIMIT 10
"""
DANGLING_LINKS_SQL = """
SELECT link.child, link.parent FROM terminology_parentlink link
WHERE link.code_system_version_id = %(version)s
  AND NOT EXISTS (SELECT 1 FROM terminology_concept c
                  WHERE c.code_system_version_id = %(version)s AND c.code = link.parent)
LIMIT 10
"""
# The closure level by level, set-based. The concepts not closed yet (no row with themselves: a concept's
# rows are written in one statement with that one) are listed in a temporary table of the session with the
# links among them, and each gets its depth among them (0: no parent listed; else 1 + its deepest listed
# parent's), one UPDATE per depth. Then one statement per level (up to `limit` concepts each) writes the rows
# of the shallowest listed concepts — themselves ∪ their parents' rows — and strikes them off, each its own
# transaction: a run stopped anywhere lists what is left and goes on from there. 15 levels for a SNOMED CT
# edition 15 deep. A concept in (or below) a cycle gets no depth: `close_remaining` walks those.
#
# The rows are inserted in the primary key's order (ancestor, descendant): 30 % less CPU than unordered on a
# 10,000-concept level of the SNOMED-sized edition (docs/terminology.md). An ancestor reached through two
# parents comes twice (UNION ALL) and `ON CONFLICT DO NOTHING` keeps one: a UNION sorted every row once more to
# the same end (~1.2 s of 16 per 50,000-concept level). After each level the closure is vacuumed: the next
# level's probes read the index alone (heap fetches: 8.8 s → 2.3 s of a deep level's 50,000 concepts).
#
# The joins with the version's links and closure are LATERAL probes by key, one per concept and parent, fenced
# by OFFSET 0: planned otherwise, on statistics lagging behind a table that grows by millions of rows per
# statement (or never analysed: a test's), PostgreSQL scanned the version's whole closure or links per concept.
LIST_UNCLOSED_SQL = (
    "DROP TABLE IF EXISTS pg_temp.closure_pending, pg_temp.closure_pending_link",
    'CREATE TEMPORARY TABLE closure_pending (code varchar(200) COLLATE "C" PRIMARY KEY, depth int)',
    """INSERT INTO closure_pending (code)
    SELECT c.code FROM terminology_concept c
    WHERE c.code_system_version_id = %(version)s
      AND NOT EXISTS (SELECT 1 FROM terminology_closure closed
                      WHERE closed.code_system_version_id = %(version)s
                        AND closed.ancestor = c.code AND closed.descendant = c.code)""",
    "ANALYZE closure_pending",
    """CREATE TEMPORARY TABLE closure_pending_link AS
    SELECT pending.code AS child, link.parent
    FROM closure_pending pending
    CROSS JOIN LATERAL (SELECT link.parent FROM terminology_parentlink link
                        WHERE link.code_system_version_id = %(version)s AND link.child = pending.code OFFSET 0) link
    WHERE EXISTS (SELECT 1 FROM closure_pending listed WHERE listed.code = link.parent)""",
    "CREATE INDEX ON closure_pending_link (child)",
    "CREATE INDEX ON closure_pending_link (parent)",
    "CREATE INDEX ON closure_pending (depth)",
    "ANALYZE closure_pending_link",
)
# Depth 0: the listed concepts without a listed parent (one scan of the list). Depth d: those of the children of
# depth d - 1 whose listed parents all have a depth now (a concept's depth is its deepest parent's + 1, so it is
# a child of that level): each statement reads one level's links, not every concept still without a depth (the
# NOT EXISTS fenced by OFFSET 0: probed per candidate, not planned as a scan of every link).
ROOT_DEPTH_SQL = """
UPDATE closure_pending SET depth = 0
WHERE NOT EXISTS (SELECT 1 FROM closure_pending_link link WHERE link.child = closure_pending.code)
"""
DEPTH_SQL = """
UPDATE closure_pending SET depth = %(depth)s
FROM (SELECT DISTINCT link.child FROM closure_pending parent JOIN closure_pending_link link ON link.parent = parent.code
      WHERE parent.depth = %(depth)s - 1) candidate
WHERE closure_pending.code = candidate.child
  AND NOT EXISTS (SELECT 1 FROM closure_pending_link link JOIN closure_pending parent ON parent.code = link.parent
                  WHERE link.child = candidate.child AND parent.depth IS NULL OFFSET 0)
"""
CLOSE_LEVEL_SQL = """
WITH ready AS MATERIALIZED (
    SELECT code FROM closure_pending
    WHERE depth = (SELECT min(depth) FROM closure_pending)
    LIMIT %(limit)s
), inserted AS (
    INSERT INTO terminology_closure (code_system_version_id, ancestor, descendant)
    SELECT %(version)s, code, code FROM ready
    UNION ALL
    SELECT %(version)s, above.ancestor, ready.code
    FROM ready
    CROSS JOIN LATERAL (SELECT link.parent FROM terminology_parentlink link
                        WHERE link.code_system_version_id = %(version)s AND link.child = ready.code OFFSET 0) link
    CROSS JOIN LATERAL (SELECT above.ancestor FROM terminology_closure above
                        WHERE above.code_system_version_id = %(version)s AND above.descendant = link.parent
                        OFFSET 0) above
    ORDER BY 2, 3
    ON CONFLICT DO NOTHING
), struck_off AS (
    DELETE FROM closure_pending WHERE code IN (SELECT code FROM ready)
)
SELECT count(*) FROM ready
"""
UNCLOSED_SQL = """
SELECT c.code FROM terminology_concept c
WHERE c.code_system_version_id = %(version)s
  AND NOT EXISTS (SELECT 1 FROM terminology_closure closed
                  WHERE closed.code_system_version_id = %(version)s
                    AND closed.ancestor = c.code AND closed.descendant = c.code)
LIMIT %(limit)s
"""
CLOSURE_LEVEL_WORK_MEM = "256MB"  # the level's UNION deduplicates up to millions of rows: in memory, not on disk
SLUG = re.compile(r"[^A-Za-z0-9\-.]+")


def new_version(system: str, version: str | None = None) -> CodeSystemVersion:
    """A BUILDING version of `system`; its label may be given now or read from the file later (`label_version`).
    InvalidRequest when the system already has a version with that label."""
    if version and CodeSystemVersion.objects.filter(system=system, version=version).exists():
        raise InvalidRequest(f"{system} already has a version {version!r}; give another label")
    return CodeSystemVersion.objects.create(system=system, version=version or None)


def label_version(version_id: int, label: str, name: str = "") -> str:
    """Give a version still without a label the one its file declares, or `label-2`, `label-3`… when another
    version of the system already has it. Returns the version's label (the one it had, if any)."""
    with transaction.atomic():
        row = CodeSystemVersion.objects.select_for_update().get(pk=version_id)
        if row.version:
            return row.version
        label = label or "1"
        taken = set(
            CodeSystemVersion.objects.filter(system=row.system, version__startswith=label).values_list(
                "version", flat=True
            )
        )
        chosen, n = label, 1
        while chosen in taken:
            n += 1
            chosen = f"{label}-{n}"
        row.version, row.name = chosen, name or row.name
        row.save(update_fields=["version", "name"])
        return chosen


def write_concepts(version_id: int, records: Sequence[ConceptRecord], *, again_skips: bool = False) -> int:
    """Write a chunk of concepts with their designations, properties and parent links (and their closure rows,
    when the records carry their ancestors), in one transaction; running it again leaves the same rows.
    A chunk none of whose concepts is stored is COPYed; one whose concepts all are is, with `again_skips` (an
    upload's chunk, the same records when its step runs again), left as it is, else (a delta) rewritten.
    Returns the number of concepts."""
    codes = list(dict.fromkeys(record.code for record in records))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(STORED_CONCEPTS_SQL, [version_id, codes])
        stored = cursor.fetchone()[0]
        if stored == 0:
            _copy_rows(cursor, version_id, records)
        elif not (again_skips and stored == len(codes)):
            _replace_rows(cursor, version_id, records)
    return len(records)


STORED_CONCEPTS_SQL = (
    "SELECT count(*) FROM terminology_concept WHERE code_system_version_id = %s AND code = ANY(%s::text[])"
)
COPY_SQL = {
    "concepts": "COPY terminology_concept (code_system_version_id, code, display, abstract) FROM STDIN",
    "designations": "COPY terminology_designation "
    "(code_system_version_id, code, value, language, use_system, use_code) FROM STDIN",
    "properties": "COPY terminology_conceptproperty "
    "(code_system_version_id, code, property, value, type, system) FROM STDIN",
    "links": "COPY terminology_parentlink (code_system_version_id, child, parent) FROM STDIN",
    "closure": "COPY terminology_closure (code_system_version_id, ancestor, descendant) FROM STDIN",
}


def _chunk_rows(version_id: int, records: Sequence[ConceptRecord]) -> dict[str, list[tuple]]:
    """A chunk's rows per table, the version's id first (the columns of COPY_SQL and REWRITE_SQL); a parent or
    an ancestor named twice gives one row."""
    return {
        "concepts": [(version_id, r.code, r.display, r.abstract) for r in records],
        "designations": [
            (version_id, r.code, d.value, d.language, d.use_system, d.use_code) for r in records for d in r.designations
        ],
        "properties": [(version_id, r.code, p.name, p.value, p.type, p.system) for r in records for p in r.properties],
        "links": [(version_id, r.code, parent) for r in records for parent in dict.fromkeys(r.parents)],
        "closure": [
            (version_id, ancestor, r.code)
            for r in records
            if r.ancestors is not None
            for ancestor in dict.fromkeys((r.code, *r.ancestors))
        ],
    }


def _copy_rows(cursor, version_id: int, records: Sequence[ConceptRecord]) -> None:
    """A chunk none of whose concepts is stored yet (an upload's first attempt): every row is new, so COPY,
    3–8 × faster per row than `INSERT … SELECT FROM unnest` (measured in docs/terminology.md)."""
    for kind, rows in _chunk_rows(version_id, records).items():
        if rows:  # no COPY, and no lock, on a table the chunk has no rows for (the closure, mostly)
            with cursor.copy(COPY_SQL[kind]) as copy:
                for row in rows:
                    copy.write_row(row)


def _replace_rows(cursor, version_id: int, records: Sequence[ConceptRecord]) -> None:
    """A chunk written before (a re-run) or a delta: concepts upserted, their other rows replaced."""
    codes = [record.code for record in records]
    for table, column in (
        ("terminology_designation", "code"),
        ("terminology_conceptproperty", "code"),
        ("terminology_parentlink", "child"),
    ):
        cursor.execute(
            f"DELETE FROM {table} WHERE code_system_version_id = %s AND {column} = ANY(%s::text[])",
            [version_id, codes],
        )
    for kind, rows in _chunk_rows(version_id, records).items():
        if rows:
            cursor.execute(REWRITE_SQL[kind], [list(column) for column in zip(*rows, strict=True)])


def dangling_links(version_id: int, codes: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """Up to 10 links (of these concepts, or of the whole version) to a parent the version does not have: a
    file naming an unknown code."""
    with connection.cursor() as cursor:
        if codes is None:
            cursor.execute(DANGLING_LINKS_SQL, {"version": version_id})
        else:
            cursor.execute(DANGLING_CHUNK_LINKS_SQL, {"version": version_id, "codes": list(codes)})
        return cursor.fetchall()


def close_levels(version_id: int, limit: int, after_each: Callable[[int], None] = lambda closed: None) -> int:
    """Close the version's concepts level by level, up to `limit` concepts per statement and transaction,
    calling `after_each(concepts closed)` between statements (it may raise to stop: a run again goes on).
    Returns the concepts closed; those in or below a cycle are left to `close_remaining`."""
    closed = 0
    with connection.cursor() as cursor:
        try:
            cursor.execute("VACUUM (ANALYZE) terminology_parentlink")  # the links just loaded: planned, and probed
            with transaction.atomic():  # from the index alone (the visibility map set)
                for statement in LIST_UNCLOSED_SQL:
                    cursor.execute(statement, {"version": version_id} if "%(version)s" in statement else None)
                cursor.execute(ROOT_DEPTH_SQL)
                depth = 1
                while cursor.rowcount:
                    cursor.execute(DEPTH_SQL, {"depth": depth})
                    depth += 1
                cursor.execute("ANALYZE closure_pending")
            while True:
                with transaction.atomic():
                    cursor.execute(f"SET LOCAL work_mem = '{CLOSURE_LEVEL_WORK_MEM}'")
                    cursor.execute("SET LOCAL jit = off")  # ~0.35 s of compiling per statement, nothing gained
                    cursor.execute(CLOSE_LEVEL_SQL, {"version": version_id, "limit": limit})
                    level = cursor.fetchone()[0]
                if level == 0:
                    return closed
                closed += level
                cursor.execute("VACUUM terminology_closure")  # the next level's probes: index-only, no heap
                after_each(level)
        finally:
            cursor.execute("DROP TABLE IF EXISTS pg_temp.closure_pending, pg_temp.closure_pending_link")


def close_remaining(version_id: int, limit: int) -> int:
    """Close up to `limit` of the concepts `close_levels` cannot (a cycle in the hierarchy) by walking
    their links up; returns the concepts closed, 0 once every one is."""
    with connection.cursor() as cursor:
        cursor.execute(UNCLOSED_SQL, {"version": version_id, "limit": limit})
        codes = [code for (code,) in cursor.fetchall()]
    if codes:
        build_closure(version_id, codes)
    return len(codes)


def build_closure(version_id: int, codes: Sequence[str]) -> int:
    """The closure rows of these concepts (each with itself and every ancestor), by walking the links up
    (a delta's few concepts, and cycles); returns the rows new."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(BUILD_CLOSURE_SQL, {"version": version_id, "codes": list(codes)})
        return cursor.rowcount


def make_current(version_id: int, *, concepts: int | None = None, closure_rows: int | None = None) -> bool:
    """Make a version the CURRENT one of its system in one short transaction: the previous current version
    becomes SUPERSEDED, the stored expansions that use the system become stale (NOT_EXPANDED), and the
    system's CodeSystem resource (content not-present) names the new version. False when the version is
    already current (a second run); raises CodeSystemVersion.DoesNotExist for an unknown id."""
    with transaction.atomic():
        version = CodeSystemVersion.objects.select_for_update().get(pk=version_id)
        if version.status == VersionStatus.CURRENT:
            return False
        CodeSystemVersion.objects.filter(system=version.system, status=VersionStatus.CURRENT).update(
            status=VersionStatus.SUPERSEDED
        )
        changes = {"status": VersionStatus.CURRENT, "made_current_at": Now()}
        if concepts is not None:
            changes["concept_count"] = concepts
        if closure_rows is not None:
            changes["closure_count"] = closure_rows
        CodeSystemVersion.objects.filter(pk=version_id).update(**changes)
        mark_expansions_stale([version.system])
        version.refresh_from_db()
        # The CodeSystem resource the server builds itself: no SearchParameter, no special authority needed.
        save_changed_resources([Write(code_system_resource(version))], authority=CLIENT)
    return True


def mark_expansions_stale(systems: Sequence[str]) -> int:
    """Stored expansions built from these systems are stale: NOT_EXPANDED, to be expanded again."""
    return (
        ValueSetExpansion.objects.filter(systems__overlap=list(systems))
        .exclude(status=ExpansionStatus.NOT_EXPANDED)
        .update(status=ExpansionStatus.NOT_EXPANDED, updated_at=Now())
    )


def code_system_resource(version: CodeSystemVersion) -> dict:
    """The CodeSystem resource of a loaded system: its metadata, the concepts stay in the terminology tables."""
    return {
        "resourceType": "CodeSystem",
        "id": resource_id(version.system),
        "url": version.system,
        "version": version.version or "",
        "name": SLUG.sub("_", version.name or resource_id(version.system)),
        "status": "active",
        "content": "not-present",
        "count": version.concept_count,
    }


def resource_id(system: str) -> str:
    """A FHIR id for a system URL: its last path segment (`icd-10-cm`), made safe."""
    tail = system.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return (SLUG.sub("-", tail).strip("-.") or "codesystem")[:64]


def counts(version_id: int) -> tuple[int, int]:
    """(concepts, closure rows) of a version, counted."""
    return (
        Concept.objects.filter(code_system_version_id=version_id).count(),
        Closure.objects.filter(code_system_version_id=version_id).count(),
    )


def store_uploaded_file(file_id, name: str, content: bytes) -> None:
    UploadedFile.objects.create(id=file_id, name=name, content=content)


def uploaded_file(file_id) -> bytes:
    """An inline file's bytes; UploadedFile.DoesNotExist once dropped."""
    return bytes(UploadedFile.objects.values_list("content", flat=True).get(pk=file_id))


def drop_uploaded_files(file_ids: Sequence) -> None:
    UploadedFile.objects.filter(pk__in=list(file_ids)).delete()


def drop_abandoned_uploaded_files(older_than_hours: int = 24) -> int:
    """Inline files of uploads that never finished (failed, cancelled): the finished ones dropped their own."""
    deleted, _ = UploadedFile.objects.filter(created_at__lt=Now() - timedelta(hours=older_than_hours)).delete()
    return deleted


def record_counts(version_id: int, *, concepts: int, closure_rows: int) -> None:
    CodeSystemVersion.objects.filter(pk=version_id).update(concept_count=concepts, closure_count=closure_rows)


def version_row(version_id: int) -> CodeSystemVersion:
    return CodeSystemVersion.objects.get(pk=version_id)


def make_version_current(system: str, version: str) -> CodeSystemVersion:
    """Make a loaded version (one uploaded without being made current, or a superseded one) current again;
    UnknownCodeSystem when there is no such version, InvalidRequest while it is still being built."""
    from fhirstore.terminology.lookup import resolve_version

    found = resolve_version(system, version)
    if found.status == VersionStatus.BUILDING and found.concept_count == 0:
        raise InvalidRequest(f"Version {version!r} of {system} is still being uploaded")
    make_current(found.id)
    return version_row(found.id)


def note_upload(version_id: int, upload_id: str) -> None:
    """Remember which upload (job) writes the version."""
    CodeSystemVersion.objects.filter(pk=version_id).update(loaded_by=upload_id)


def add_concepts(system: str, records: Sequence[ConceptRecord]) -> int:
    """`$apply-codesystem-delta-add`: add (or replace) concepts in the current version of `system`, in one
    transaction: their rows, their closure, and the stored expansions using the system marked stale. A
    concept may name parents already in the version or added with it; it may not become the parent of a
    concept already there (the closure of those would change: upload a new version instead)."""
    from fhirstore.terminology.lookup import resolve_version

    version = resolve_version(system)
    codes = [record.code for record in records]
    with transaction.atomic():
        existing_children = set(
            ParentLink.objects.filter(code_system_version=version, parent__in=codes)
            .exclude(child__in=codes)
            .values_list("child", flat=True)
        )
        if existing_children:
            raise InvalidRequest(
                f"A delta may not add parents to existing concepts "
                f"({', '.join(sorted(existing_children)[:5])}): upload a new version"
            )
        write_concepts(version.id, records)
        missing = dangling_links(version.id, codes)
        if missing:
            raise InvalidRequest("Parents not in the code system: " + ", ".join(f"{c} → {p}" for c, p in missing))
        Closure.objects.filter(code_system_version=version, descendant__in=codes).delete()
        build_closure(version.id, codes)
        CodeSystemVersion.objects.filter(pk=version.id).update(
            concept_count=Concept.objects.filter(code_system_version=version).count()
        )
        mark_expansions_stale([system])
    return len(records)


def remove_concepts(system: str, codes: Sequence[str]) -> int:
    """`$apply-codesystem-delta-remove`: remove concepts from the current version of `system`, in one
    transaction: their rows and closure rows, and the stored expansions using the system marked stale. A
    concept goes only with its children (a child left behind would keep a parent that no longer exists:
    remove them too, or upload a new version); so every descendant goes too and no other concept's closure
    changes. Codes the version does not have are ignored (a delta retried removes nothing more). Returns the
    number removed."""
    from fhirstore.terminology.lookup import resolve_version

    version = resolve_version(system)
    with transaction.atomic():
        present = sorted(
            Concept.objects.filter(code_system_version=version, code__in=codes).values_list("code", flat=True)
        )
        left_behind = sorted(
            set(
                ParentLink.objects.filter(code_system_version=version, parent__in=present)
                .exclude(child__in=present)
                .values_list("child", flat=True)
            )
        )
        if left_behind:
            raise InvalidRequest(
                f"A delta may remove a concept only with its children; not removed: "
                f"{', '.join(left_behind[:5])}{' …' if len(left_behind) > 5 else ''}"
            )
        if not present:
            return 0
        with connection.cursor() as cursor:
            for table, column in (
                ("terminology_closure", "descendant"),
                ("terminology_conceptproperty", "code"),
                ("terminology_designation", "code"),
                ("terminology_parentlink", "child"),
                ("terminology_concept", "code"),
            ):
                cursor.execute(
                    f"DELETE FROM {table} WHERE code_system_version_id = %s AND {column} = ANY(%s::text[])",
                    [version.id, present],
                )
        CodeSystemVersion.objects.filter(pk=version.id).update(
            concept_count=Concept.objects.filter(code_system_version=version).count(),
            closure_count=Closure.objects.filter(code_system_version=version).count(),
        )
        mark_expansions_stale([system])
    return len(present)


VERSION_TABLES = (
    "terminology_closure",
    "terminology_conceptproperty",
    "terminology_designation",
    "terminology_parentlink",
    "terminology_concept",
)  # the rows of a version, deleted in this order


def start_deleting(version_id: int) -> CodeSystemVersion:
    """The version answers nothing from now on: DELETING (from any other status, in one transaction). When it
    was the current one, the system has none until another is made current: its CodeSystem resource goes and
    the stored expansions using it become stale."""
    from fhirstore.storage import delete_resource

    with transaction.atomic():
        version = CodeSystemVersion.objects.select_for_update().get(pk=version_id)
        if version.status == VersionStatus.DELETING:
            return version
        was_current = version.status == VersionStatus.CURRENT
        CodeSystemVersion.objects.filter(pk=version_id).update(status=VersionStatus.DELETING)
        if was_current:
            mark_expansions_stale([version.system])
            try:
                delete_resource("CodeSystem", resource_id(version.system), authority=CLIENT)
            except FhirStoreError:
                pass  # never written, or deleted by hand: nothing to take back
    version.refresh_from_db()
    return version


def delete_version_rows(version_id: int, table: str, limit: int) -> int:
    """Delete up to `limit` rows of a DELETING version from one of its tables, in a transaction of its own
    (short, whatever the version's size). Returns the rows deleted: 0 once the table holds none."""
    if table not in VERSION_TABLES:
        raise ValueError(f"{table} is not a terminology table")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} "
            f"WHERE code_system_version_id = %s LIMIT %s))",
            [version_id, limit],
        )
        return cursor.rowcount


def forget_version(version_id: int) -> None:
    """The version's own row, once its rows are gone."""
    CodeSystemVersion.objects.filter(pk=version_id, status=VersionStatus.DELETING).delete()

"""SNOMED CT from an RF2 Snapshot release, read as streams joined on disk (`keyedrows`).

The files (tab-separated, UTF-8, a header row, as released):

- `sct2_Concept_Snapshot_…txt`: id, effectiveTime, active, moduleId, definitionStatusId;
- `sct2_Description_Snapshot-<lang>_…txt` (and `sct2_TextDefinition_…`): id, effectiveTime, active, moduleId,
  conceptId, languageCode, typeId, term, caseSignificanceId;
- `sct2_Relationship_Snapshot_…txt` (the inferred relationships): id, effectiveTime, active, moduleId,
  sourceId, destinationId, relationshipGroup, typeId, characteristicTypeId, modifierId; the active rows of
  type IS-A (116680003) are the parent links (several parents: the closure is built from the links);
- `der2_cRefset_LanguageSnapshot-<lang>_…txt`: id, effectiveTime, active, moduleId, refsetId,
  referencedComponentId (a description), acceptabilityId (preferred 900000000000548007, acceptable …549004).

Every concept is written, inactive ones too (property `inactive` true; they have no active IS-A links).
Its display is its preferred synonym in the US English language refset, else one preferred in another
language refset, else its fully specified name; every active description is a designation (language,
use = its type: FSN 900000000000003001, synonym 900000000000013009, definition 900000000000550004).
Properties: `inactive`, `moduleId`, `effectiveTime`, `sufficientlyDefined`. The version is the release
date in the concept file's name (`…_INT_20250101.txt` → `20250101`).

Two on-disk joins, never the edition in memory: the language refset rows with the descriptions (by
description id), then the concepts with their descriptions and IS-A relationships (by concept id).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence

from fhirstore.terminology import keyedrows
from fhirstore.terminology.exceptions import InvalidTerminologyFile
from fhirstore.terminology.records import ConceptRecord, Designation, NamedFile, Property, ReleaseFacts, files_by_kind

SYSTEM = "http://snomed.info/sct"
IS_A = "116680003"
FSN, SYNONYM, DEFINITION = "900000000000003001", "900000000000013009", "900000000000550004"
PREFERRED = "900000000000548007"
US_ENGLISH = "900000000000509007"
SUFFICIENTLY_DEFINED = "900000000000073002"

CONCEPT, DESCRIPTION, RELATIONSHIP, LANGUAGE = "concept", "description", "relationship", "language refset"
FILE_PATTERNS = (  # (kind, the start of the file's name, lower case)
    (CONCEPT, "sct2_concept_snapshot"),
    (DESCRIPTION, "sct2_description_snapshot"),
    (DESCRIPTION, "sct2_textdefinition_snapshot"),
    (RELATIONSHIP, "sct2_relationship_snapshot"),
    (LANGUAGE, "der2_crefset_languagesnapshot"),
)
COLUMNS = {
    CONCEPT: ("id", "effectiveTime", "active", "moduleId", "definitionStatusId"),
    DESCRIPTION: (
        "id",
        "effectiveTime",
        "active",
        "moduleId",
        "conceptId",
        "languageCode",
        "typeId",
        "term",
        "caseSignificanceId",
    ),
    RELATIONSHIP: (
        "id",
        "effectiveTime",
        "active",
        "moduleId",
        "sourceId",
        "destinationId",
        "relationshipGroup",
        "typeId",
        "characteristicTypeId",
        "modifierId",
    ),
    LANGUAGE: ("id", "effectiveTime", "active", "moduleId", "refsetId", "referencedComponentId", "acceptabilityId"),
}
RELEASE_DATE = re.compile(r"_(\d{8})\.txt(\.gz)?$", re.IGNORECASE)


def file_kind(name: str) -> str | None:
    base = name.rsplit("/", 1)[-1].lower()
    return next((kind for kind, start in FILE_PATTERNS if base.startswith(start)), None)


def file_problems(names: Sequence[str]) -> list[str]:
    """What is wrong with an upload's files, by their names (checked at kick-off)."""
    kinds = [file_kind(name) for name in names]
    problems = [
        f"{name}: SNOMED CT takes the RF2 Snapshot files sct2_Concept_Snapshot, sct2_Description_Snapshot, "
        f"sct2_TextDefinition_Snapshot, sct2_Relationship_Snapshot, der2_cRefset_LanguageSnapshot"
        for name, kind in zip(names, kinds, strict=True)
        if kind is None
    ]
    for needed in (CONCEPT, DESCRIPTION):
        if needed not in kinds:
            problems.append(f"SNOMED CT needs a {needed} file (sct2_{needed.capitalize()}_Snapshot_…txt)")
    if kinds.count(CONCEPT) > 1:
        problems.append("SNOMED CT takes one sct2_Concept_Snapshot file")
    return problems


def read_concepts(
    files: Sequence[NamedFile], facts: ReleaseFacts | None = None, run_rows: int = keyedrows.RUN_ROWS
) -> Iterator[ConceptRecord]:
    """The concepts of an RF2 Snapshot, in concept id order. InvalidTerminologyFile when a file is not in
    its RF2 layout, or a description or relationship names a concept the concept file lacks."""
    facts = facts if facts is not None else ReleaseFacts()
    by_kind = files_by_kind(
        files,
        file_kind,
        unknown="not an RF2 Snapshot file SNOMED CT takes",
        needed=CONCEPT,
        missing="SNOMED CT needs an sct2_Concept_Snapshot file",
    )
    concept_file = by_kind[CONCEPT][0][0]
    date = RELEASE_DATE.search(concept_file)
    facts.version = date.group(1) if date else ""
    with keyedrows.workspace() as directory:
        descriptions = _descriptions_with_acceptability(by_kind, directory, run_rows)
        for concept_id, rows in keyedrows.grouped(_concept_rows(by_kind, descriptions), directory, run_rows):
            yield _concept(concept_id, rows)


def _rows(kind: str, files: Sequence[NamedFile]) -> Iterator[list[str]]:
    columns = COLUMNS[kind]
    for name, opener in files:
        with opener() as stream:
            text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
            header = text.readline().rstrip("\r\n").split("\t")
            if tuple(header) != columns:
                raise InvalidTerminologyFile(
                    f"{name}: not the RF2 {kind} layout (its header: {' '.join(header)}; expected: {' '.join(columns)})"
                )
            try:
                for number, line in enumerate(text, 2):
                    fields = line.rstrip("\r\n").split("\t")
                    if len(fields) != len(columns):
                        if not line.strip():
                            continue
                        raise InvalidTerminologyFile(f"{name}, line {number}: {len(fields)} fields, not {len(columns)}")
                    yield fields
            except UnicodeDecodeError as error:
                raise InvalidTerminologyFile(f"{name}: not UTF-8 ({error})") from None


def _descriptions_with_acceptability(by_kind: dict, directory: str, run_rows: int) -> Iterator[tuple]:
    """Active descriptions keyed by their concept: (conceptId, "D", typeId, languageCode, term, rank), rank 0
    for preferred in US English, 1 preferred elsewhere, 2 otherwise."""

    def keyed() -> Iterator[tuple]:
        for row in _rows(LANGUAGE, by_kind.get(LANGUAGE, [])):
            if row[2] == "1" and row[6] == PREFERRED:
                yield row[5], "L", 0 if row[4] == US_ENGLISH else 1
        for row in _rows(DESCRIPTION, by_kind[DESCRIPTION]):
            if row[2] == "1":
                yield row[0], "D", row[4], row[5], row[6], row[7]

    for _, rows in keyedrows.grouped(keyed(), directory, run_rows):
        rank = min((row[2] for row in rows if row[1] == "L"), default=2)
        for row in rows:
            if row[1] == "D":
                yield row[2], "D", row[4], row[3], row[5], rank


def _concept_rows(by_kind: dict, descriptions: Iterator[tuple]) -> Iterator[tuple]:
    for row in _rows(CONCEPT, by_kind[CONCEPT]):
        yield row[0], "C", row[1], row[2], row[3], row[4]
    yield from descriptions
    for row in _rows(RELATIONSHIP, by_kind.get(RELATIONSHIP, [])):
        if row[2] == "1" and row[7] == IS_A:
            yield row[4], "R", row[5]


def _concept(concept_id: str, rows: list[tuple]) -> ConceptRecord:
    concept = next((row for row in rows if row[1] == "C"), None)
    if concept is None:
        raise InvalidTerminologyFile(
            f"a description or IS-A relationship names the concept {concept_id}, which the concept file does not have"
        )
    _, _, effective_time, active, module, definition_status = concept
    descriptions = sorted((row for row in rows if row[1] == "D"), key=_display_rank)
    display = descriptions[0][4] if descriptions else ""
    return ConceptRecord(
        concept_id,
        display,
        sorted({row[2] for row in rows if row[1] == "R"}),
        designations=[
            Designation(term, language, SYSTEM, type_id) for _, _, type_id, language, term, _ in descriptions
        ],
        properties=[
            Property("inactive", "false" if active == "1" else "true", "boolean"),
            Property("moduleId", module, "code"),
            Property("effectiveTime", effective_time),
            Property(
                "sufficientlyDefined", "true" if definition_status == SUFFICIENTLY_DEFINED else "false", "boolean"
            ),
        ],
    )


def _display_rank(row: tuple) -> tuple:
    """Preferred synonyms first (US English first), then FSNs, then the rest; ties by term."""
    _, _, type_id, _, term, rank = row
    kind = 0 if type_id == SYNONYM and rank < 2 else 1 if type_id == FSN else 2
    return (kind, rank, term)

"""LOINC from the published distribution's CSV files, read as streams joined on disk (`keyedrows`).

- `Loinc.csv` (LoincTable/, required): a concept per `LOINC_NUM`, display `LONG_COMMON_NAME` (else
  `SHORTNAME`, else `COMPONENT`); `SHORTNAME`, `DisplayName`, `CONSUMER_NAME` are designations (language
  `en`, use `http://loinc.org|<column>`); the axes and status columns (`STRING_COLUMNS`) string properties;
  `inactive` true when `STATUS` is DEPRECATED. The version is the highest `VersionLastChanged`.
- `Part.csv` (AccessoryFiles/PartFile/): a concept per `PartNumber` (LP…), display `PartDisplayName` (else
  `PartName`), property `PartTypeName`; `inactive` when its `Status` is DEPRECATED.
- `LoincPartLink_Primary.csv` / `LoincPartLink_Supplementary.csv` (AccessoryFiles/PartFile/): each row a
  Coding property of the LOINC code, named by the last segment of `Property`
  (`http://loinc.org/property/COMPONENT` → `COMPONENT`), valued `PartCodeSystem|PartNumber`. A part-link
  property replaces Loinc.csv's string column of the same name.
- `MultiAxialHierarchy.csv` or `ComponentHierarchyBySystem.csv` (AccessoryFiles/…): `IMMEDIATE_PARENT` → `CODE`
  parent links (several parents allowed); a code only the hierarchy names is a concept with `CODE_TEXT`.

Headers must hold the columns named here (others are ignored). All rows are grouped by code on disk, so
neither the table nor the hierarchy is ever held in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from fhirstore.terminology import keyedrows
from fhirstore.terminology.customcsv import read_csv
from fhirstore.terminology.exceptions import InvalidTerminologyFile
from fhirstore.terminology.records import ConceptRecord, Designation, NamedFile, Property, ReleaseFacts, files_by_kind

SYSTEM = "http://loinc.org"
TABLE, PARTS, PART_LINKS, HIERARCHY = "Loinc.csv", "Part.csv", "LoincPartLink", "hierarchy"
FILE_NAMES = {
    "loinc.csv": TABLE,
    "part.csv": PARTS,
    "loincpartlink_primary.csv": PART_LINKS,
    "loincpartlink_supplementary.csv": PART_LINKS,
    "multiaxialhierarchy.csv": HIERARCHY,
    "componenthierarchybysystem.csv": HIERARCHY,
}
STRING_COLUMNS = (
    "COMPONENT",
    "PROPERTY",
    "TIME_ASPCT",
    "SYSTEM",
    "SCALE_TYP",
    "METHOD_TYP",
    "CLASS",
    "CLASSTYPE",
    "STATUS",
    "ORDER_OBS",
    "EXAMPLE_UCUM_UNITS",
    "VERSIONFIRSTRELEASED",
    "VERSIONLASTCHANGED",
)
DESIGNATION_COLUMNS = ("SHORTNAME", "DISPLAYNAME", "CONSUMER_NAME")
COLUMNS = {
    TABLE: ("LOINC_NUM", "COMPONENT", "LONG_COMMON_NAME", "SHORTNAME", "STATUS", "VERSIONLASTCHANGED"),
    PARTS: ("PARTNUMBER", "PARTTYPENAME", "PARTNAME", "PARTDISPLAYNAME", "STATUS"),
    PART_LINKS: ("LOINCNUMBER", "PARTNUMBER", "PARTCODESYSTEM", "PROPERTY"),
    HIERARCHY: ("IMMEDIATE_PARENT", "CODE", "CODE_TEXT"),
}
DEPRECATED = "DEPRECATED"


def file_kind(name: str) -> str | None:
    return FILE_NAMES.get(name.rsplit("/", 1)[-1].lower())


def file_problems(names: Sequence[str]) -> list[str]:
    kinds = [file_kind(name) for name in names]
    problems = [
        f"{name}: LOINC takes Loinc.csv, Part.csv, LoincPartLink_Primary.csv, "
        f"LoincPartLink_Supplementary.csv, MultiAxialHierarchy.csv or ComponentHierarchyBySystem.csv"
        for name, kind in zip(names, kinds, strict=True)
        if kind is None
    ]
    if TABLE not in kinds:
        problems.append("LOINC needs Loinc.csv")
    return problems


def read_concepts(
    files: Sequence[NamedFile], facts: ReleaseFacts | None = None, run_rows: int = keyedrows.RUN_ROWS
) -> Iterator[ConceptRecord]:
    """The concepts of the files, in code order; InvalidTerminologyFile when a file lacks a column."""
    facts = facts if facts is not None else ReleaseFacts()
    by_kind = files_by_kind(
        files, file_kind, unknown="not a LOINC file this server reads", needed=TABLE, missing="LOINC needs Loinc.csv"
    )
    versions: set[str] = set()
    with keyedrows.workspace() as directory:
        for code, rows in keyedrows.grouped(_keyed_rows(by_kind, versions), directory, run_rows):
            yield _concept(code, rows)
    facts.version = max(versions, key=_version_order, default="")


def _version_order(version: str) -> tuple:
    return tuple(int(part) if part.isdigit() else -1 for part in version.split("."))


def _rows(kind: str, by_kind: dict) -> Iterator[dict[str, str]]:
    for name, opener in by_kind.get(kind, []):
        yield from read_csv(opener, name, COLUMNS[kind])


def _keyed_rows(by_kind: dict, versions: set[str]) -> Iterator[tuple]:
    for row in _rows(TABLE, by_kind):
        if row["LOINC_NUM"]:
            if row["VERSIONLASTCHANGED"]:
                versions.add(row["VERSIONLASTCHANGED"])
            yield (
                row["LOINC_NUM"],
                "T",
                {column: row.get(column, "") for column in (*STRING_COLUMNS, *DESIGNATION_COLUMNS, "LONG_COMMON_NAME")},
            )
    for row in _rows(PARTS, by_kind):
        if row["PARTNUMBER"]:
            yield row["PARTNUMBER"], "P", row["PARTDISPLAYNAME"] or row["PARTNAME"], row["PARTTYPENAME"], row["STATUS"]
    for row in _rows(PART_LINKS, by_kind):
        if row["LOINCNUMBER"] and row["PARTNUMBER"]:
            name = row["PROPERTY"].rstrip("/").rsplit("/", 1)[-1]
            yield row["LOINCNUMBER"], "L", name, row["PARTNUMBER"], row["PARTCODESYSTEM"] or SYSTEM
    for row in _rows(HIERARCHY, by_kind):
        if row["CODE"]:
            yield row["CODE"], "H", row["IMMEDIATE_PARENT"], row["CODE_TEXT"]


def _concept(code: str, rows: list[tuple]) -> ConceptRecord:
    table = next((row[2] for row in rows if row[1] == "T"), None)
    part = next((row for row in rows if row[1] == "P"), None)
    links = [row for row in rows if row[1] == "L"]
    parents = sorted({row[2] for row in rows if row[1] == "H" and row[2]})
    hierarchy_text = next((row[3] for row in rows if row[1] == "H" and row[3]), "")
    if table is None and part is None and not any(row[1] == "H" for row in rows):
        raise InvalidTerminologyFile(f"a LoincPartLink row names the LOINC code {code}, which Loinc.csv does not have")
    properties, designations, display = [], [], hierarchy_text
    if part is not None:
        display = part[2] or display
        properties += [Property("PartTypeName", part[3]), Property("inactive", _inactive(part[4]), "boolean")]
    if table is not None:
        display = table["LONG_COMMON_NAME"] or table["SHORTNAME"] or table["COMPONENT"] or display
        linked = {name for _, _, name, _, _ in links}
        properties += [
            Property(column, table[column]) for column in STRING_COLUMNS if table[column] and column not in linked
        ]
        properties.append(Property("inactive", _inactive(table["STATUS"]), "boolean"))
        designations = [
            Designation(table[column], "en", SYSTEM, column) for column in DESIGNATION_COLUMNS if table[column]
        ]
    properties += [Property(name, part_number, "Coding", system) for _, _, name, part_number, system in links]
    return ConceptRecord(code, display, parents, designations=designations, properties=properties)


def _inactive(status: str) -> str:
    return "true" if status.upper() == DEPRECATED else "false"

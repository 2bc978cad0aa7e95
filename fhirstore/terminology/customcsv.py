"""HAPI FHIR's custom terminology CSV files, for any code system without a distribution format of its own.

`concepts.csv` (`CODE,DISPLAY`), optionally `hierarchy.csv` (`PARENT,CHILD`; a child may have several
parents) and `properties.csv` (`CODE,KEY,VALUE[,TYPE]`; TYPE `STRING` (default) or `CODING`), with header
rows, UTF-8 (a BOM is skipped), as HAPI's `$upload-external-code-system` takes them. The hierarchy and the
properties are read first into memory (keyed by code: they are the small files of a local code system),
then the concepts are streamed with their parents and properties attached.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterator

from fhirstore.terminology.exceptions import InvalidTerminologyFile
from fhirstore.terminology.records import ConceptRecord, Opener, Property

CONCEPTS, HIERARCHY, PROPERTIES = "concepts.csv", "hierarchy.csv", "properties.csv"
FILE_NAMES = (CONCEPTS, HIERARCHY, PROPERTIES)
PROPERTY_TYPES = {"STRING": "string", "CODING": "Coding", "": "string"}


def file_kind(name: str) -> str | None:
    """Which of the three files a name is (`…/concepts.csv`, `CONCEPTS.CSV`), or None."""
    base = name.rsplit("/", 1)[-1].lower()
    return next((kind for kind in FILE_NAMES if base.endswith(kind)), None)


def read_concepts(files: dict[str, Opener]) -> Iterator[ConceptRecord]:
    """The concepts of the files (keyed by kind: concepts.csv, hierarchy.csv, properties.csv)."""
    if CONCEPTS not in files:
        raise InvalidTerminologyFile("a custom code system needs a concepts.csv (CODE,DISPLAY)")
    parents: dict[str, list[str]] = defaultdict(list)
    if HIERARCHY in files:
        for row in read_csv(files[HIERARCHY], HIERARCHY, ("PARENT", "CHILD")):
            if row["PARENT"] and row["CHILD"]:
                parents[row["CHILD"]].append(row["PARENT"])
    properties: dict[str, list[Property]] = defaultdict(list)
    if PROPERTIES in files:
        for row in read_csv(files[PROPERTIES], PROPERTIES, ("CODE", "KEY", "VALUE")):
            kind = PROPERTY_TYPES.get((row.get("TYPE") or "").upper())
            if kind is None:
                raise InvalidTerminologyFile(f"properties.csv: TYPE {row['TYPE']!r} is not STRING or CODING")
            if row["CODE"] and row["KEY"]:
                system, _, code = row["VALUE"].rpartition("|") if kind == "Coding" else ("", "", row["VALUE"])
                properties[row["CODE"]].append(Property(row["KEY"], code, kind, system))
    seen: set[str] = set()
    for row in read_csv(files[CONCEPTS], CONCEPTS, ("CODE", "DISPLAY")):
        code = row["CODE"]
        if not code:
            continue
        if code in seen:
            raise InvalidTerminologyFile(f"concepts.csv: the code {code!r} appears more than once")
        seen.add(code)
        yield ConceptRecord(code, row["DISPLAY"], parents.pop(code, []), properties=properties.pop(code, []))
    unknown = sorted(set(parents) | set(properties))[:5]
    if unknown:
        raise InvalidTerminologyFile(
            f"hierarchy.csv or properties.csv name codes concepts.csv does not have: {', '.join(unknown)}"
        )


def read_csv(opener: Opener, name: str, columns: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """The rows of a CSV file with a header (names upper-cased, values stripped); InvalidTerminologyFile when a
    needed column is missing or the file is not CSV in UTF-8. Also LOINC's files."""
    with opener() as stream:
        reader = csv.DictReader(io.TextIOWrapper(stream, encoding="utf-8-sig", newline=""))
        header = [column.strip().upper() for column in reader.fieldnames or []]
        missing = [column for column in columns if column not in header]
        if missing:
            raise InvalidTerminologyFile(f"{name}: no column {', '.join(missing)} (its header: {','.join(header)})")
        reader.fieldnames = header
        try:
            for row in reader:
                yield {key: (value or "").strip() for key, value in row.items() if key is not None}
        except (csv.Error, UnicodeDecodeError) as error:
            raise InvalidTerminologyFile(f"{name}, line {reader.line_num}: {error}") from None

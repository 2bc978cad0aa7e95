"""A concept as a loader reads it from a distribution file, before it is written: the unit every loader
produces and the upload's load step writes, a chunk at a time; and the files a loader reads, each a name and
a way to open it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import IO

from fhirstore.terminology.exceptions import InvalidTerminologyFile

SYNONYM = ("http://snomed.info/sct", "900000000000013009")  # FHIR's designation-use "Synonym"

Opener = Callable[[], AbstractContextManager[IO[bytes]]]  # opens one of a release's files as a binary stream
NamedFile = tuple[str, Opener]


def files_by_kind(
    files: Iterable[NamedFile], file_kind: Callable[[str], str | None], *, unknown: str, needed: str, missing: str
) -> dict[str, list[NamedFile]]:
    """A release's files by the kind `file_kind` reads in their names, in the order given. InvalidTerminologyFile
    names a file of no kind (`unknown` after its name) or says `missing` when there is none of kind `needed`."""
    by_kind: dict[str, list[NamedFile]] = {}
    for name, opener in files:
        kind = file_kind(name)
        if kind is None:
            raise InvalidTerminologyFile(f"{name}: {unknown}")
        by_kind.setdefault(kind, []).append((name, opener))
    if needed not in by_kind:
        raise InvalidTerminologyFile(missing)
    return by_kind


@dataclass
class ReleaseFacts:
    """What a release's files say about it, filled in by the reader as it reads them: the version label
    (ICD-10-CM's <version>, SNOMED CT's release date, LOINC's highest VersionLastChanged) and a name."""

    version: str = ""
    name: str = ""


@dataclass(frozen=True)
class Designation:
    value: str
    language: str = ""
    use_system: str = ""
    use_code: str = ""


@dataclass(frozen=True)
class Property:
    name: str
    value: str
    type: str = "string"  # a PropertyType value
    system: str = ""  # a Coding's system


@dataclass
class ConceptRecord:
    code: str
    display: str
    parents: list[str] = field(default_factory=list)
    abstract: bool = False
    designations: list[Designation] = field(default_factory=list)
    properties: list[Property] = field(default_factory=list)
    # Every ancestor, when the reader knows them (a strict tree read top-down, as ICD-10-CM): the closure rows
    # are then written with the concept. None: the upload computes them from the links (several parents).
    ancestors: list[str] | None = None

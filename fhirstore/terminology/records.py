"""A concept as a loader reads it from a distribution file, before it is written: the unit every loader
produces and the upload's load step writes, a chunk at a time."""

from __future__ import annotations

from dataclasses import dataclass, field

SYNONYM = ("http://snomed.info/sct", "900000000000013009")  # FHIR's designation-use "Synonym"


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

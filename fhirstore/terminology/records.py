"""A concept as a loader reads it from a distribution file, before it is written: the unit every loader
produces and the upload's chunks carry (as compact JSON lists, see `to_json`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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

    def to_json(self) -> list[Any]:
        """`[code, display, abstract, parents, designations, properties, ancestors]`: chunks hold thousands."""
        return [
            self.code,
            self.display,
            self.abstract,
            self.parents,
            [[d.value, d.language, d.use_system, d.use_code] for d in self.designations],
            [[p.name, p.value, p.type, p.system] for p in self.properties],
            self.ancestors,
        ]

    @classmethod
    def from_json(cls, data: list[Any]) -> ConceptRecord:
        code, display, abstract, parents, designations, properties, ancestors = data
        return cls(
            code,
            display,
            list(parents),
            bool(abstract),
            [Designation(*d) for d in designations],
            [Property(*p) for p in properties],
            None if ancestors is None else list(ancestors),
        )

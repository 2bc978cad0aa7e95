"""Which reader parses a system's distribution files, chosen by the system URL.

A loader turns the upload's files (each a name and a way to open it as a binary stream) into
`ConceptRecord`s, streaming, and says the version the files declare once read. ICD-10-CM has its own
format, SNOMED CT its RF2 Snapshot files, LOINC its CSV files; every other system is read as HAPI's custom
terminology CSV files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from fhirstore.terminology import customcsv, icd10cm, loinc, snomed
from fhirstore.terminology.records import ConceptRecord, NamedFile, ReleaseFacts


@dataclass(frozen=True)
class Loader:
    name: str
    read: Callable[[Sequence[NamedFile], ReleaseFacts], Iterator[ConceptRecord]]
    file_problems: Callable[[Sequence[str]], list[str]]  # checked at kick-off on the files' names


def _read_icd10cm(files: Sequence[NamedFile], facts: ReleaseFacts) -> Iterator[ConceptRecord]:
    about = icd10cm.Icd10CmFile()
    for _, opener in files:
        with opener() as stream:
            yield from icd10cm.read_concepts(stream, about)
    facts.version, facts.name = about.version, "ICD-10-CM"


def _read_custom(files: Sequence[NamedFile], facts: ReleaseFacts) -> Iterator[ConceptRecord]:
    yield from customcsv.read_concepts({customcsv.file_kind(name): opener for name, opener in files})


def _read_snomed(files: Sequence[NamedFile], facts: ReleaseFacts) -> Iterator[ConceptRecord]:
    yield from snomed.read_concepts(files, facts)
    facts.name = "SNOMED CT"


def _read_loinc(files: Sequence[NamedFile], facts: ReleaseFacts) -> Iterator[ConceptRecord]:
    yield from loinc.read_concepts(files, facts)
    facts.name = "LOINC"


def _custom_file_problems(names: Sequence[str]) -> list[str]:
    kinds = [customcsv.file_kind(name) for name in names]
    problems = [
        f"{name}: a custom code system takes {', '.join(customcsv.FILE_NAMES)}"
        for name, kind in zip(names, kinds, strict=True)
        if kind is None
    ]
    if customcsv.CONCEPTS not in kinds:
        problems.append("a custom code system needs a concepts.csv (CODE,DISPLAY)")
    return problems


ICD10CM = Loader("ICD-10-CM tabular XML", _read_icd10cm, lambda names: [])
CUSTOM_CSV = Loader(
    "custom terminology CSV (concepts.csv, hierarchy.csv, properties.csv)", _read_custom, _custom_file_problems
)
SNOMED_CT = Loader("SNOMED CT RF2 Snapshot", _read_snomed, snomed.file_problems)
LOINC = Loader("LOINC CSV (Loinc.csv, Part.csv, LoincPartLink, hierarchy)", _read_loinc, loinc.file_problems)
LOADERS = {icd10cm.SYSTEM: ICD10CM, snomed.SYSTEM: SNOMED_CT, loinc.SYSTEM: LOINC}


def loader_for(system: str) -> Loader:
    return LOADERS.get(system, CUSTOM_CSV)

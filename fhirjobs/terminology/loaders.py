"""Which reader parses a system's distribution files, chosen by the system URL.

A loader turns the upload's files (opened as binary streams) into `ConceptRecord`s, streaming, and says
the version the files declare once read.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from fhirjobs.terminology.exceptions import InvalidUploadRequest
from fhirstore.terminology import icd10cm
from fhirstore.terminology.records import ConceptRecord


@dataclass
class FileFacts:
    """What the files say about the version, filled in as they are read."""

    version: str = ""
    name: str = ""


@dataclass(frozen=True)
class Loader:
    name: str
    read: Callable[[IO[bytes], FileFacts], Iterator[ConceptRecord]]


def _read_icd10cm(stream: IO[bytes], facts: FileFacts) -> Iterator[ConceptRecord]:
    about = icd10cm.Icd10CmFile()
    yield from icd10cm.read_concepts(stream, about)
    facts.version, facts.name = about.version, "ICD-10-CM"


LOADERS = {icd10cm.SYSTEM: Loader("ICD-10-CM tabular XML", _read_icd10cm)}


def loader_for(system: str) -> Loader:
    """InvalidUploadRequest for a system no loader reads."""
    loader = LOADERS.get(system)
    if loader is None:
        raise InvalidUploadRequest([f"no loader for the system {system!r}; supported: {', '.join(sorted(LOADERS))}"])
    return loader

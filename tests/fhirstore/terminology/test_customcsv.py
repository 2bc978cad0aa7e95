"""HAPI's custom terminology CSV files: the reader."""

from __future__ import annotations

import io
from contextlib import nullcontext

import pytest

from fhirstore.terminology.customcsv import read_concepts
from fhirstore.terminology.exceptions import InvalidTerminologyFile

LOCAL = "http://example.org/CodeSystem/lab"
CONCEPTS = '\ufeffCODE,DISPLAY\nPANEL,Lab panels\nCBC,Complete blood count\nHGB,Hemoglobin\nWBC,"White cells, count"\n'
HIERARCHY = "PARENT,CHILD\nPANEL,CBC\nCBC,HGB\nCBC,WBC\nPANEL,WBC\n"
PROPERTIES = "CODE,KEY,VALUE,TYPE\nHGB,unit,g/dL,STRING\nHGB,loinc,http://loinc.org|718-7,CODING\nWBC,unit,10*3/uL,\n"


def opener(text: str):
    return lambda: nullcontext(io.BytesIO(text.encode()))


def test_concepts_with_several_parents_and_typed_properties():
    read = {
        r.code: r
        for r in read_concepts(
            {"concepts.csv": opener(CONCEPTS), "hierarchy.csv": opener(HIERARCHY), "properties.csv": opener(PROPERTIES)}
        )
    }
    assert list(read) == ["PANEL", "CBC", "HGB", "WBC"]
    assert read["WBC"].display == "White cells, count" and sorted(read["WBC"].parents) == ["CBC", "PANEL"]
    assert [(p.name, p.value, p.type, p.system) for p in read["HGB"].properties] == [
        ("unit", "g/dL", "string", ""),
        ("loinc", "718-7", "Coding", "http://loinc.org"),
    ]


@pytest.mark.parametrize(
    "files, message",
    [
        ({"hierarchy.csv": opener(HIERARCHY)}, "needs a concepts.csv"),
        ({"concepts.csv": opener("CODE,NAME\nA,a\n")}, "no column DISPLAY"),
        ({"concepts.csv": opener("CODE,DISPLAY\nA,a\nA,b\n")}, "'A' appears more than once"),
        (
            {"concepts.csv": opener("CODE,DISPLAY\nA,a\n"), "hierarchy.csv": opener("PARENT,CHILD\nA,B\n")},
            "does not have: B",
        ),
        (
            {
                "concepts.csv": opener("CODE,DISPLAY\nA,a\n"),
                "properties.csv": opener("CODE,KEY,VALUE,TYPE\nA,k,v,DATE\n"),
            },
            "'DATE' is not STRING or CODING",
        ),
    ],
)
def test_bad_files_are_refused_with_the_reason(files, message):
    with pytest.raises(InvalidTerminologyFile, match=message):
        list(read_concepts(files))

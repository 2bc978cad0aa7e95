"""LOINC's CSV files: the reader, on files generated in the published layout (tests/…/rf2.py)."""

from __future__ import annotations

import pytest

from fhirstore.terminology import loinc
from fhirstore.terminology.exceptions import InvalidTerminologyFile
from fhirstore.terminology.records import ReleaseFacts
from tests.fhirstore.terminology import rf2


def read(files: dict[str, str], run_rows: int = 3) -> tuple[dict, str]:
    facts = ReleaseFacts()
    records = {record.code: record for record in loinc.read_concepts(rf2.named_files(files), facts, run_rows)}
    return records, facts.version


def test_loinc_codes_parts_and_hierarchy_nodes_are_concepts_with_the_hierarchy_as_parents():
    records, version = read(rf2.LOINC_FILES)
    assert version == "2.80"  # the highest VersionLastChanged: 2.80 > 2.9 > 2.74
    assert sorted(records) == sorted(["2345-7", "718-7", "99999-1", "LP14635-4", "LP14449-0", "LP7786-9", "LP432695-7"])
    assert records["718-7"].parents == ["LP14449-0", "LP7786-9"]  # two parents
    assert records["LP432695-7"].display == "{component}" and records["LP432695-7"].parents == []  # hierarchy only
    assert records["LP7786-9"].display == "Chemistry"  # Part.csv's display name


def test_a_loinc_code_has_its_columns_as_properties_and_its_names_as_designations():
    glucose = read(rf2.LOINC_FILES)[0]["2345-7"]
    assert glucose.display == "Glucose [Mass/volume] in Serum or Plasma"
    properties = {p.name: (p.value, p.type, p.system) for p in glucose.properties}
    assert properties["COMPONENT"] == ("LP14635-4", "Coding", "http://loinc.org")  # the part link replaces the text
    assert properties["SYSTEM"] == ("Ser/Plas", "string", "") and properties["inactive"][0] == "false"
    assert [(d.value, d.use_code) for d in glucose.designations] == [
        ("Glucose SerPl-mCnc", "SHORTNAME"),
        ("Glucose, Bld", "DISPLAYNAME"),
    ]


def test_deprecated_codes_are_inactive():
    properties = {p.name: p.value for p in read(rf2.LOINC_FILES)[0]["99999-1"].properties}
    assert properties["inactive"] == "true" and properties["STATUS"] == "DEPRECATED"


def test_the_table_alone_is_enough_and_reads_the_same_in_runs_or_in_memory():
    table = {"Loinc.csv": rf2.LOINC_TABLE}
    assert read(table, run_rows=1) == read(table, run_rows=100_000)
    assert read(table)[0]["718-7"].parents == []


@pytest.mark.parametrize(
    "files, message",
    [
        ({"Part.csv": rf2.LOINC_PARTS}, "needs Loinc.csv"),
        ({"Loinc.csv": '"LOINC_NUM","COMPONENT"\r\n"1-8","X"\r\n'}, "Loinc.csv: no column LONG_COMMON_NAME"),
        (
            {"Loinc.csv": rf2.LOINC_TABLE, "LoincPartLink_Primary.csv": rf2.LOINC_PART_LINKS.replace("2345-7", "1-8")},
            "names the LOINC code 1-8, which Loinc.csv does not have",
        ),
    ],
)
def test_bad_files_are_refused_with_the_reason(files, message):
    with pytest.raises(InvalidTerminologyFile, match=message):
        read(files)


def test_file_names_are_checked_at_kick_off():
    assert loinc.file_problems(list(rf2.LOINC_FILES)) == []
    assert loinc.file_problems(["LoincTableCore.csv"]) == [
        "LoincTableCore.csv: LOINC takes Loinc.csv, Part.csv, LoincPartLink_Primary.csv, "
        "LoincPartLink_Supplementary.csv, MultiAxialHierarchy.csv or ComponentHierarchyBySystem.csv",
        "LOINC needs Loinc.csv",
    ]

"""SNOMED CT RF2 Snapshot: the reader, on files generated in the released layout (tests/…/rf2.py)."""

from __future__ import annotations

import pytest

from fhirstore.terminology import snomed
from fhirstore.terminology.exceptions import InvalidTerminologyFile
from fhirstore.terminology.records import ReleaseFacts
from tests.fhirstore.terminology import rf2


def read(files: dict[str, str], run_rows: int = 3) -> dict[str, object]:
    """run_rows=3: the on-disk sort writes and merges several runs even for these few rows."""
    facts = ReleaseFacts()
    records = {record.code: record for record in snomed.read_concepts(rf2.named_files(files), facts, run_rows)}
    records["version"] = facts.version
    return records


def test_concepts_in_id_order_with_is_a_parents_only_from_active_rows():
    read_back = read(rf2.SNOMED_FILES)
    assert read_back.pop("version") == "20250101"
    assert list(read_back) == sorted(read_back)
    assert read_back[rf2.TYPE_2].parents == sorted([rf2.DIABETES, rf2.GLUCOSE])  # two parents; not the inactive
    assert read_back[rf2.ROOT].parents == [] and read_back[rf2.RETIRED].parents == []  # nor the finding site


def test_display_is_the_us_preferred_synonym_else_the_fsn():
    read_back = read(rf2.SNOMED_FILES)
    assert read_back[rf2.TYPE_2].display == "Type 2 diabetes mellitus"  # not GB's "Type II …"
    assert read_back[rf2.GLUCOSE].display == "Disorder of glucose metabolism (disorder)"  # its refset row inactive
    assert read_back[rf2.FINDING].display == "Clinical finding (finding)"


def test_active_descriptions_are_designations_with_their_type_as_use():
    designations = read(rf2.SNOMED_FILES)[rf2.TYPE_2].designations
    assert sorted((d.value, d.use_code) for d in designations) == [
        ("Type 2 diabetes mellitus", rf2.SYNONYM),
        ("Type 2 diabetes mellitus (disorder)", rf2.FSN),
        ("Type II diabetes mellitus", rf2.SYNONYM),
    ]
    assert {(d.language, d.use_system) for d in designations} == {("en", snomed.SYSTEM)}


def test_inactive_concepts_are_read_with_the_inactive_property():
    properties = {p.name: p.value for p in read(rf2.SNOMED_FILES)[rf2.RETIRED].properties}
    assert properties == {
        "inactive": "true",
        "moduleId": rf2.CORE,
        "effectiveTime": "20250101",
        "sufficientlyDefined": "false",
    }


def test_the_same_files_read_in_memory_or_in_runs_give_the_same_records():
    assert read(rf2.SNOMED_FILES, run_rows=2) == read(rf2.SNOMED_FILES, run_rows=100_000)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda files: files.pop("sct2_Concept_Snapshot_INT_20250101.txt"), "needs an sct2_Concept_Snapshot"),
        (
            lambda files: files.update({"sct2_Concept_Snapshot_INT_20250101.txt": "id\tactive\n1\t1\n"}),
            "not the RF2 concept layout",
        ),
        (
            lambda files: files.update({"sct2_Relationship_Snapshot_INT_20250101.txt": rf2.RELATIONSHIPS + "x\t1\n"}),
            "line 11: 2 fields, not 10",
        ),
        (
            lambda files: files.update(
                {
                    "sct2_Description_Snapshot-en_INT_20250101.txt": rf2.DESCRIPTIONS
                    + "9\t20250101\t1\t1\t555\ten\t1\tStray\t1\r\n"
                }
            ),
            "names the concept 555, which the concept file does not have",
        ),
    ],
)
def test_files_not_in_the_rf2_layout_are_refused_with_the_reason(change, message):
    files = dict(rf2.SNOMED_FILES)
    change(files)
    with pytest.raises(InvalidTerminologyFile, match=message):
        read(files)


def test_file_names_are_checked_at_kick_off():
    assert snomed.file_problems(list(rf2.SNOMED_FILES)) == []
    problems = snomed.file_problems(["sct2_Concept_Full_INT_20250101.txt", "sct2_StatedRelationship_Snapshot.txt"])
    assert problems[0].startswith("sct2_Concept_Full_INT_20250101.txt: SNOMED CT takes the RF2 Snapshot files")
    assert "needs a concept file" in problems[2] and "needs a description file" in problems[3]

"""The ICD-10-CM tabular XML reader, on a slice of the real 2026 file and on the whole file."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from fhirstore.terminology.exceptions import InvalidTerminologyFile
from fhirstore.terminology.icd10cm import Icd10CmFile, read_concepts
from tests.fhirstore.terminology.helpers import SLICE


def concepts(path: Path = SLICE) -> dict:
    with path.open("rb") as stream:
        return {record.code: record for record in read_concepts(stream)}


def test_codes_with_the_dot_their_parents_and_the_version():
    about = Icd10CmFile()
    with SLICE.open("rb") as stream:
        read = {record.code: record for record in read_concepts(stream, about)}
    assert about.version == "2026"
    assert read["E11.9"].display == "Type 2 diabetes mellitus without complications"
    assert read["E11.9"].parents == ["E11"]
    assert read["E11"].parents == ["E08-E13"] and read["E08-E13"].parents == ["4"] and read["4"].parents == []
    assert read["4"].abstract and read["E08-E13"].abstract and not read["E11"].abstract
    kinds = {code: next(p.value for p in record.properties if p.name == "kind") for code, record in read.items()}
    assert (kinds["4"], kinds["E08-E13"], kinds["E11"], kinds["E11.9"]) == ("chapter", "block", "category", "code")


def test_a_one_category_section_is_not_a_block_of_its_own():
    read = concepts()
    assert read["B10"].parents == ["1"]
    assert read["B10"].display == "Other human herpesviruses"


def test_seventh_characters_apply_to_the_leaves_below_the_declaration():
    read = concepts()
    assert read["S72.001A"].parents == ["S72.001"]
    assert read["S72.001A"].display == (
        "Fracture of unspecified part of neck of right femur, initial encounter for closed fracture"
    )
    assert {code for code in read if code.startswith("S72.001")} == {
        "S72.001",
        *(f"S72.001{c}" for c in "ABCDEFGHJKMNPQRS"),
    }
    assert "S72.00A" not in read and "S72.0A" not in read  # not leaves
    assert read["T07.XXXA"].parents == ["T07"]  # padded with the placeholder X


def test_the_s06_note_limits_death_codes_to_the_initial_encounter():
    read = concepts()
    assert {code for code in read if code.startswith("S06.2X8")} == {"S06.2X8", "S06.2X8A"}
    assert {code for code in read if code.startswith("S06.2X9")} == {"S06.2X9", "S06.2X9A", "S06.2X9D", "S06.2X9S"}


def test_inclusion_terms_are_designations_and_notes_properties():
    read = concepts()
    assert [d.value for d in read["E11.21"].designations] == [
        "Type 2 diabetes mellitus with intercapillary glomerulosclerosis",
        "Type 2 diabetes mellitus with intracapillary glomerulonephrosis",
        "Type 2 diabetes mellitus with Kimmelstiel-Wilson disease",
    ]
    assert read["E11.21"].designations[0].use_code == "900000000000013009"
    excludes = [p.value for p in read["E11"].properties if p.name == "excludes1"]
    assert "type 1 diabetes mellitus (E10.-)" in excludes
    assert any(p.name == "useAdditionalCode" for p in read["E11"].properties)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not xml at all", "not well-formed XML"),
        (b"<?xml version='1.0'?><ClaML></ClaML>", "root element is <ClaML>"),
        (b"<ICD10CM.tabular><chapter><desc>no name</desc></chapter></ICD10CM.tabular>", "without a code"),
    ],
)
def test_other_files_are_refused_with_the_reason(content, message):
    with pytest.raises(InvalidTerminologyFile, match=message):
        list(read_concepts(io.BytesIO(content)))


def test_the_whole_2026_file_matches_the_cms_code_list():
    """Every code of the CMS code list that ships with the file (through simple_icd_10_cm, which reads it),
    and no other. The list's 258 blocks include 39 one-category sections (B10, C7A, …) whose id is also
    their category's code: here they are the category only, so 22 + 219 + 98,225 codes."""
    from importlib.resources import files

    import simple_icd_10_cm

    full = files("simple_icd_10_cm") / "data" / "icd10c-tabular-April-1-2026.xml"
    codes, parents = set(), {}
    with full.open("rb") as stream:
        for record in read_concepts(stream):
            codes.add(record.code)
            parents[record.code] = record.parents[0] if record.parents else None
    assert codes == set(simple_icd_10_cm.get_all_codes(True))
    assert len(codes) == 22 + 219 + 98_225
    assert parents["E11.9"] == "E11" and parents["S72.001A"] == "S72.001"

"""A small SNOMED CT RF2 Snapshot and LOINC release written in the published layouts (generated here: the
real ones are licensed and must not be committed)."""

from __future__ import annotations

import io
from contextlib import nullcontext

T = "\t"
CONCEPT_HEADER = "id effectiveTime active moduleId definitionStatusId"
DESCRIPTION_HEADER = "id effectiveTime active moduleId conceptId languageCode typeId term caseSignificanceId"
RELATIONSHIP_HEADER = (
    "id effectiveTime active moduleId sourceId destinationId relationshipGroup typeId characteristicTypeId modifierId"
)
LANGUAGE_HEADER = "id effectiveTime active moduleId refsetId referencedComponentId acceptabilityId"
CORE, FSN, SYNONYM, IS_A = "900000000000207008", "900000000000003001", "900000000000013009", "116680003"
US, GB, PREFERRED, ACCEPTABLE = "900000000000509007", "900000000000508004", "900000000000548007", "900000000000549004"
INFERRED, SOME, CASE = "900000000000011006", "900000000000451002", "900000000000448009"
ROOT, FINDING, DISEASE, DIABETES, GLUCOSE, TYPE_2, RETIRED = (
    "138875005",
    "404684003",
    "64572001",
    "73211009",
    "126877002",
    "44054006",
    "100005",
)


def _file(header: str, rows: list[tuple]) -> str:
    return "\r\n".join([header.replace(" ", T), *(T.join(map(str, row)) for row in rows)]) + "\r\n"


CONCEPTS = _file(
    CONCEPT_HEADER,
    [
        (code, "20250101", 0 if code == RETIRED else 1, CORE, "900000000000074008")
        for code in (TYPE_2, ROOT, FINDING, DISEASE, DIABETES, GLUCOSE, RETIRED)
    ],
)
DESCRIPTIONS = _file(
    DESCRIPTION_HEADER,
    [
        ("1001", "20250101", 1, CORE, ROOT, "en", FSN, "SNOMED CT Concept (SNOMED RT+CTV3)", CASE),
        ("1002", "20250101", 1, CORE, ROOT, "en", SYNONYM, "SNOMED CT Concept", CASE),
        ("1011", "20250101", 1, CORE, FINDING, "en", FSN, "Clinical finding (finding)", CASE),
        ("1021", "20250101", 1, CORE, DISEASE, "en", FSN, "Disease (disorder)", CASE),
        ("1022", "20250101", 1, CORE, DISEASE, "en", SYNONYM, "Disease", CASE),
        ("1031", "20250101", 1, CORE, DIABETES, "en", FSN, "Diabetes mellitus (disorder)", CASE),
        ("1032", "20250101", 1, CORE, DIABETES, "en", SYNONYM, "Diabetes mellitus", CASE),
        ("1041", "20250101", 1, CORE, GLUCOSE, "en", FSN, "Disorder of glucose metabolism (disorder)", CASE),
        ("1051", "20250101", 1, CORE, TYPE_2, "en", FSN, "Type 2 diabetes mellitus (disorder)", CASE),
        ("1052", "20250101", 1, CORE, TYPE_2, "en", SYNONYM, "Type 2 diabetes mellitus", CASE),
        ("1053", "20250101", 1, CORE, TYPE_2, "en", SYNONYM, "Type II diabetes mellitus", CASE),
        ("1054", "20250101", 0, CORE, TYPE_2, "en", SYNONYM, "Maturity onset diabetes", CASE),
        ("1061", "20250101", 1, CORE, RETIRED, "en", FSN, "Retired concept (disorder)", CASE),
    ],
)
RELATIONSHIPS = _file(
    RELATIONSHIP_HEADER,
    [
        ("2001", "20250101", 1, CORE, FINDING, ROOT, 0, IS_A, INFERRED, SOME),
        ("2002", "20250101", 1, CORE, DISEASE, FINDING, 0, IS_A, INFERRED, SOME),
        ("2003", "20250101", 1, CORE, DIABETES, DISEASE, 0, IS_A, INFERRED, SOME),
        ("2004", "20250101", 1, CORE, GLUCOSE, DISEASE, 0, IS_A, INFERRED, SOME),
        ("2005", "20250101", 1, CORE, TYPE_2, DIABETES, 0, IS_A, INFERRED, SOME),
        ("2006", "20250101", 1, CORE, TYPE_2, GLUCOSE, 0, IS_A, INFERRED, SOME),  # a second parent
        ("2007", "20250101", 0, CORE, TYPE_2, FINDING, 0, IS_A, INFERRED, SOME),  # inactive: no link
        ("2008", "20250101", 1, CORE, TYPE_2, "113331007", 1, "363698007", INFERRED, SOME),  # finding site: no link
        ("2009", "20250101", 0, CORE, RETIRED, DISEASE, 0, IS_A, INFERRED, SOME),
    ],
)
LANGUAGE = _file(
    LANGUAGE_HEADER,
    [
        ("a1", "20250101", 1, CORE, US, "1002", PREFERRED),
        ("a2", "20250101", 1, CORE, US, "1022", PREFERRED),
        ("a3", "20250101", 1, CORE, US, "1032", PREFERRED),
        ("a4", "20250101", 1, CORE, GB, "1053", PREFERRED),
        ("a5", "20250101", 1, CORE, US, "1052", PREFERRED),
        ("a6", "20250101", 1, CORE, US, "1053", ACCEPTABLE),
        ("a7", "20250101", 1, CORE, US, "1051", PREFERRED),
        ("a8", "20250101", 0, CORE, US, "1041", PREFERRED),
    ],
)
SNOMED_FILES = {
    "sct2_Concept_Snapshot_INT_20250101.txt": CONCEPTS,
    "sct2_Description_Snapshot-en_INT_20250101.txt": DESCRIPTIONS,
    "sct2_Relationship_Snapshot_INT_20250101.txt": RELATIONSHIPS,
    "der2_cRefset_LanguageSnapshot-en_INT_20250101.txt": LANGUAGE,
}

LOINC_TABLE = (
    '"LOINC_NUM","COMPONENT","PROPERTY","TIME_ASPCT","SYSTEM","SCALE_TYP","METHOD_TYP","CLASS","VersionLastChanged",'
    '"CHNG_TYPE","DefinitionDescription","STATUS","CONSUMER_NAME","CLASSTYPE","FORMULA","EXMPL_ANSWERS",'
    '"SURVEY_QUEST_TEXT","SURVEY_QUEST_SRC","UNITSREQUIRED","RELATEDNAMES2","SHORTNAME","ORDER_OBS",'
    '"HL7_FIELD_SUBFIELD_ID","EXTERNAL_COPYRIGHT_NOTICE","EXAMPLE_UNITS","LONG_COMMON_NAME","EXAMPLE_UCUM_UNITS",'
    '"STATUS_REASON","STATUS_TEXT","CHANGE_REASON_PUBLIC","COMMON_TEST_RANK","COMMON_ORDER_RANK",'
    '"HL7_ATTACHMENT_STRUCTURE","EXTERNAL_COPYRIGHT_LINK","PanelType","AskAtOrderEntry","AssociatedObservations",'
    '"VersionFirstReleased","ValidHL7AttachmentRequest","DisplayName"\r\n'
    '"2345-7","Glucose","MCnc","Pt","Ser/Plas","Qn","","CHEM","2.74","MIN","","ACTIVE","","1","","","","","Y",'
    '"Glucose; Gluc","Glucose SerPl-mCnc","Both","","","mg/dL","Glucose [Mass/volume] in Serum or Plasma","mg/dL",'
    '"","","","5","3","","","","","","1.0","","Glucose, Bld"\r\n'
    '"718-7","Hemoglobin","MCnc","Pt","Bld","Qn","","HEM/BC","2.80","MIN","","ACTIVE","","1","","","","","Y",'
    '"Hgb","Hgb Bld-mCnc","Both","","","g/dL","Hemoglobin [Mass/volume] in Blood","g/dL","","","","12","","","",'
    '"","","","1.0","",""\r\n'
    '"99999-1","Old glucose","MCnc","Pt","Ser","Qn","","CHEM","2.9","DEL","","DEPRECATED","","1","","","","","",'
    '"","Old glu","","","","","Old glucose test","","","","","0","0","","","","","","2.9","",""\r\n'
)
LOINC_PARTS = (
    '"PartNumber","PartTypeName","PartName","PartDisplayName","Status"\r\n'
    '"LP14635-4","COMPONENT","Glucose","Glucose","ACTIVE"\r\n'
    '"LP14449-0","COMPONENT","Hemoglobin","Hemoglobin","ACTIVE"\r\n'
    '"LP7786-9","CLASS","CHEM","Chemistry","ACTIVE"\r\n'
)
LOINC_PART_LINKS = (
    '"LoincNumber","LongCommonName","PartNumber","PartName","PartCodeSystem","PartTypeName",'
    '"LinkTypeName","Property"\r\n'
    '"2345-7","Glucose [Mass/volume] in Serum or Plasma","LP14635-4","Glucose","http://loinc.org",'
    '"COMPONENT","Primary","http://loinc.org/property/COMPONENT"\r\n'
)
LOINC_HIERARCHY = (
    '"PATH_TO_ROOT","SEQUENCE","IMMEDIATE_PARENT","CODE","CODE_TEXT"\r\n'
    '"","1","","LP432695-7","{component}"\r\n'
    '"LP432695-7","1","LP432695-7","LP7786-9","Chemistry"\r\n'
    '"LP432695-7.LP7786-9","1","LP7786-9","LP14635-4","Glucose"\r\n'
    '"LP432695-7.LP7786-9.LP14635-4","1","LP14635-4","2345-7","Glucose SerPl-mCnc"\r\n'
    '"LP432695-7","2","LP432695-7","LP14449-0","Hemoglobin"\r\n'
    '"LP432695-7.LP14449-0","1","LP14449-0","718-7","Hgb Bld-mCnc"\r\n'
    '"LP432695-7.LP7786-9","2","LP7786-9","718-7","Hgb Bld-mCnc"\r\n'
)
LOINC_FILES = {
    "LoincTable/Loinc.csv": LOINC_TABLE,
    "AccessoryFiles/PartFile/Part.csv": LOINC_PARTS,
    "AccessoryFiles/PartFile/LoincPartLink_Primary.csv": LOINC_PART_LINKS,
    "AccessoryFiles/MultiAxialHierarchy/MultiAxialHierarchy.csv": LOINC_HIERARCHY,
}


def named_files(files: dict[str, str]) -> list[tuple[str, object]]:
    """(name, opener) pairs, as a loader takes them."""
    return [(name, lambda text=text: nullcontext(io.BytesIO(text.encode()))) for name, text in files.items()]

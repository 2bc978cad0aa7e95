"""ICD-10-CM from the CMS/NCHS tabular XML (`icd10cm-tabular-<year>.xml`), read as a stream.

The file nests `<chapter>` → `<section>` → `<diag>` → `<diag>`…; each element is handled when it ends and
then cleared, so a 10 MB file is parsed with a few kilobytes of tree at any moment. Concepts:

- chapters, coded by their number ("1" … "22"), and blocks, coded by their section id ("A00-A09"), both
  abstract (groupers), a block's parent its chapter; a section whose id is a single category ("B10") is
  not a block of its own (its id is the category's code) and its categories hang under the chapter;
- every `<diag>` (categories and codes, with the dot: `E11.9`), its parent the enclosing diag or block;
- the 7th-character codes: a `<sevenChrDef>` applies to every leaf diag below the element that declares it
  (the nearest declaration wins); the leaf's code is padded with the placeholder X to six characters and
  the character appended (`S72.001` + `A` → `S72.001A`, `T07` + `A` → `T07.XXXA`), its display the leaf's
  followed by the extension's (", initial encounter for closed fracture"), as in the CMS code list; the
  one exception the file states only in prose (S06) is applied (`_extension_applies`).

Inclusion terms become designations (use: Synonym); the other notes (includes, excludes1, excludes2,
codeFirst, codeAlso, useAdditionalCode, notes, sevenChrNote) properties of type string named after their
element. Each concept also has a `kind` property (chapter, block, category, code, extension), and its
ancestors (the list is a tree: they are the concepts open around it), so its closure rows are written with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO
from xml.etree import ElementTree

from fhirstore.terminology.exceptions import InvalidTerminologyFile
from fhirstore.terminology.records import SYNONYM, ConceptRecord, Designation, Property

SYSTEM = "http://hl7.org/fhir/sid/icd-10-cm"
ROOT_TAG = "ICD10CM.tabular"
NOTE_PROPERTIES = frozenset(
    {"includes", "excludes1", "excludes2", "codeFirst", "codeAlso", "useAdditionalCode", "notes", "sevenChrNote"}
)
SEVENTH_CHARACTER_POSITION = 6  # characters before the 7th, without the dot
CONCEPT_TAGS = frozenset({"chapter", "section", "diag"})


@dataclass
class _Frame:
    """An open chapter, section or diag: what is known of it so far."""

    tag: str
    parent: str | None  # the code of the concept it hangs under
    code: str = ""
    display: str = ""
    notes: list[Property] = field(default_factory=list)
    inclusion_terms: list[str] = field(default_factory=list)
    extensions: dict[str, str] | None = None  # a sevenChrDef declared here
    has_children: bool = False


@dataclass
class Icd10CmFile:
    """What the file says about itself, filled in as it is read."""

    version: str = ""


def read_concepts(stream: IO[bytes], about: Icd10CmFile | None = None) -> Iterator[ConceptRecord]:
    """The concepts of a tabular XML file in document order (a diag after the diags it contains).

    InvalidTerminologyFile when the stream is not XML or not the ICD-10-CM tabular list.
    """
    about = about if about is not None else Icd10CmFile()
    frames: list[_Frame] = []
    open_tags: list[str] = []
    try:
        for event, element in ElementTree.iterparse(stream, events=("start", "end")):
            tag = element.tag
            if event == "start":
                if not open_tags and tag != ROOT_TAG:
                    raise InvalidTerminologyFile(
                        f"not an ICD-10-CM tabular file: its root element is <{tag}>, not <{ROOT_TAG}>"
                    )
                open_tags.append(tag)
                if tag in CONCEPT_TAGS:
                    frames.append(_Frame(tag, _hanging_under(frames), code=element.get("id", "")))
                elif tag == "sevenChrDef" and frames:
                    frames[-1].extensions = {}
                continue
            open_tags.pop()
            container = open_tags[-1] if open_tags else ""
            text = " ".join((element.text or "").split())
            if tag == "name" and container in ("chapter", "diag"):
                frames[-1].code = text
            elif tag == "desc" and container in CONCEPT_TAGS:
                frames[-1].display = text
            elif tag == "note" and frames and container in NOTE_PROPERTIES:
                frames[-1].notes.append(Property(container, text))
            elif tag == "note" and frames and container == "inclusionTerm":
                frames[-1].inclusion_terms.append(text)
            elif tag == "extension" and container == "sevenChrDef" and frames and frames[-1].extensions is not None:
                frames[-1].extensions[element.get("char", "")] = text
            elif tag == "version" and container == ROOT_TAG:
                about.version = text
            elif tag in CONCEPT_TAGS:
                yield from _close(frames)
            if tag != ROOT_TAG and len(open_tags) <= 1 or tag in CONCEPT_TAGS:
                element.clear()  # what was read is in the frames: keep the tree small
    except ElementTree.ParseError as error:
        raise InvalidTerminologyFile(f"not well-formed XML: {error}") from None
    if not open_tags and frames:
        raise InvalidTerminologyFile("the file ended inside an element")


def _hanging_under(frames: list[_Frame]) -> str | None:
    """The code of the innermost open concept (a one-category section is none)."""
    for frame in reversed(frames):
        if frame.tag == "section" and not _is_block(frame.code):
            continue
        return frame.code
    return None


def _is_block(section_id: str) -> bool:
    return "-" in section_id


def _close(frames: list[_Frame]) -> Iterator[ConceptRecord]:
    """The concept(s) of the frame that ends: itself, and its 7th-character codes when it is a leaf under
    a sevenChrDef."""
    frame = frames.pop()
    if frame.tag == "section" and not _is_block(frame.code):
        return
    if not frame.code:
        raise InvalidTerminologyFile(f"a <{frame.tag}> without a code (after {frame.parent or 'the start'})")
    if frames:
        frames[-1].has_children = True
    kind = {"chapter": "chapter", "section": "block"}.get(frame.tag) or (
        "category" if "." not in frame.code else "code"
    )
    ancestors = [f.code for f in frames if f.tag != "section" or _is_block(f.code)]  # a tree: the open concepts
    yield ConceptRecord(
        frame.code,
        frame.display,
        [frame.parent] if frame.parent else [],
        abstract=frame.tag != "diag",
        designations=[Designation(term, "en", *SYNONYM) for term in frame.inclusion_terms],
        properties=[Property("kind", kind, "code"), *frame.notes],
        ancestors=ancestors,
    )
    if frame.tag != "diag" or frame.has_children:
        return
    extensions = next((f.extensions for f in reversed([*frames, frame]) if f.extensions is not None), None)
    for character, meaning in (extensions or {}).items():
        if not _extension_applies(frame.code, character):
            continue
        yield ConceptRecord(
            _with_seventh(frame.code, character),
            f"{frame.display}, {meaning}",
            [frame.code],
            properties=[Property("kind", "extension", "code")],
            ancestors=[*ancestors, frame.code],
        )


def _extension_applies(code: str, character: str) -> bool:
    """The one exception the file states only in prose (S06's note): "7th characters D and S do not apply to
    codes in category S06 with 6th character 7 - death due to brain injury prior to regaining
    consciousness, or 8 - death due to other cause" (76 codes the CMS code list does not have)."""
    sixth = code.replace(".", "")[5:6]
    return not (code.startswith("S06.") and sixth in ("7", "8") and character in ("D", "S"))


def _with_seventh(code: str, character: str) -> str:
    """`S72.001` + `A` → `S72.001A`; shorter codes are padded with the placeholder X (`T07` → `T07.XXXA`)."""
    category, _, rest = code.partition(".")
    rest = rest.ljust(SEVENTH_CHARACTER_POSITION - len(category), "X")
    return f"{category}.{rest}{character}"

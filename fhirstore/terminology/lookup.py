"""Reading loaded code systems: which version answers, `$lookup`, `$validate-code`, `$subsumes`, and the
closure subqueries behind the `:below` / `:above` search modifiers.

A question without a version is answered by the system's CURRENT version; a BUILDING version answers only
when named, so an upload in progress (or one loaded with "don't make current") changes no answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.db.models import QuerySet

from fhirstore.terminology.exceptions import UnknownCode, UnknownCodeSystem
from fhirstore.terminology.models import (
    Closure,
    CodeSystemVersion,
    Concept,
    ConceptProperty,
    Designation,
    ParentLink,
    VersionStatus,
)

BUILT_IN_PROPERTIES = ("parent", "child", "inactive")


def resolve_version(system: str, version: str | None = None) -> CodeSystemVersion:
    """The version that answers for `system`: the named one, else the CURRENT one; UnknownCodeSystem (404)."""
    versions = CodeSystemVersion.objects.filter(system=system).exclude(status=VersionStatus.DELETING)
    found = (versions.filter(version=version) if version else versions.filter(status=VersionStatus.CURRENT)).first()
    if found is None:
        what = f"version {version!r} of {system!r}" if version else f"a current version of {system!r}"
        raise UnknownCodeSystem(f"This server has no {what} (load it with $upload-external-code-system)")
    return found


def current_version_id(system: str) -> int | None:
    return (
        CodeSystemVersion.objects.filter(system=system, status=VersionStatus.CURRENT)
        .values_list("id", flat=True)
        .first()
    )


@dataclass(frozen=True)
class Lookup:
    version: CodeSystemVersion
    code: str
    display: str
    abstract: bool
    designations: list[Designation]
    properties: list[tuple[str, str, str, str]]  # (name, type, value, system)


def lookup(
    system: str, code: str, version: str | None = None, properties: Sequence[str] = (), display_language: str = ""
) -> Lookup | None:
    """A concept with its designations and properties (the asked ones, all without), or None when unknown;
    its display in `display_language` when asked (`displays_in_language`).

    The built-in properties `parent` and `child` come from the links; `inactive` is false unless stored."""
    found = resolve_version(system, version)
    concept = Concept.objects.filter(code_system_version=found, code=code).first()
    if concept is None:
        return None
    if display_language:
        concept.display = displays_in_language(found.id, {code: concept.display}, display_language)[code]
    wanted = set(properties)
    stored = ConceptProperty.objects.filter(code_system_version=found, code=code).order_by("id")
    if wanted:
        stored = stored.filter(property__in=wanted)
    values = [(p.property, p.type, p.value, p.system) for p in stored]
    if not wanted or "parent" in wanted:
        values += [
            ("parent", "code", parent, "")
            for parent in ParentLink.objects.filter(code_system_version=found, child=code)
            .order_by("parent")
            .values_list("parent", flat=True)
        ]
    if not wanted or "child" in wanted:
        values += [
            ("child", "code", child, "")
            for child in ParentLink.objects.filter(code_system_version=found, parent=code)
            .order_by("child")
            .values_list("child", flat=True)
        ]
    if (not wanted or "inactive" in wanted) and not any(name == "inactive" for name, *_ in values):
        values.append(("inactive", "boolean", "false", ""))
    designations = list(Designation.objects.filter(code_system_version=found, code=code).order_by("id"))
    return Lookup(found, concept.code, concept.display, concept.abstract, designations, values)


SYNONYM_USE = "900000000000013009"


def displays_in_language(version_id: int, displays: dict[str, str], language: str) -> dict[str, str]:
    """Each code's display in a language (`displayLanguage`, matched on its primary subtag: `en-US` takes
    `en` designations and `de` takes `de-CH`): the concept's display when it is one of its designations in
    that language, else the first such designation (synonyms first), else the display unchanged."""
    wanted = language.split("-")[0].lower()
    found: dict[str, list[tuple[bool, str]]] = {}
    for code, value, designation_language, use_code in (
        Designation.objects.filter(code_system_version_id=version_id, code__in=list(displays))
        .exclude(language="")
        .order_by("id")
        .values_list("code", "value", "language", "use_code")
    ):
        if designation_language.split("-")[0].lower() == wanted:
            found.setdefault(code, []).append((use_code != SYNONYM_USE, value))
    return {
        code: display
        if not found.get(code) or display in [v for _, v in found[code]]
        else sorted(found[code], key=lambda item: item[0])[0][1]
        for code, display in displays.items()
    }


@dataclass(frozen=True)
class Validation:
    valid: bool
    message: str
    display: str = ""
    version: str = ""


def validate_code(system: str, code: str, version: str | None = None, display: str | None = None) -> Validation:
    """Whether the code is in the system (and, when a display is given, whether it is the concept's display
    or one of its designations)."""
    found = resolve_version(system, version)
    concept = Concept.objects.filter(code_system_version=found, code=code).first()
    if concept is None:
        return Validation(False, f"Unknown code {code!r} in {system} version {found.version}", version=found.version)
    if (
        display
        and display != concept.display
        and not Designation.objects.filter(code_system_version=found, code=code, value=display).exists()
    ):
        return Validation(
            False,
            f"The display {display!r} is not a display of {code!r}; it is {concept.display!r}",
            concept.display,
            found.version,
        )
    return Validation(True, "", concept.display, found.version)


def subsumes(system: str, code_a: str, code_b: str, version: str | None = None) -> str:
    """FHIR's outcome: `equivalent`, `subsumes` (A is an ancestor of B), `subsumed-by` or `not-subsumed`;
    UnknownCode when either is not in the system."""
    found = resolve_version(system, version)
    known = set(
        Concept.objects.filter(code_system_version=found, code__in=[code_a, code_b]).values_list("code", flat=True)
    )
    missing = [code for code in (code_a, code_b) if code not in known]
    if missing:
        raise UnknownCode(f"Unknown code {missing[0]!r} in {system} version {found.version}")
    if code_a == code_b:
        return "equivalent"
    closure = Closure.objects.filter(code_system_version=found)
    if closure.filter(ancestor=code_a, descendant=code_b).exists():
        return "subsumes"
    if closure.filter(ancestor=code_b, descendant=code_a).exists():
        return "subsumed-by"
    return "not-subsumed"


def codes_below(system: str, code: str) -> QuerySet:
    """The codes the current version of `system` has at or below `code` (a subquery, for `:below`)."""
    return Closure.objects.filter(code_system_version_id=_answering_version_id(system), ancestor=code).values(
        "descendant"
    )


def codes_above(system: str, code: str) -> QuerySet:
    """The codes the current version of `system` has at or above `code` (a subquery, for `:above`)."""
    return Closure.objects.filter(code_system_version_id=_answering_version_id(system), descendant=code).values(
        "ancestor"
    )


def _answering_version_id(system: str) -> int:
    version_id = current_version_id(system)
    if version_id is None:
        raise UnknownCodeSystem(
            f"This server has no current version of {system!r}: :below and :above need the code system loaded"
        )
    return version_id

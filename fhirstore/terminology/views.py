"""The terminology operations over HTTP: thin views over `lookup` and `valuesets`.

`CodeSystem/$lookup`, `$validate-code`, `$subsumes` and `ValueSet/$expand`, `$validate-code`, at type level
(the system or ValueSet named by parameters) and instance level (`CodeSystem/[id]/…`, `ValueSet/[id]/…`),
by GET (query parameters) or POST (a Parameters resource). They read, so a token with `fhir:read` may call
them either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings

from fhirstore.exceptions import InvalidRequest
from fhirstore.http import FhirView, fhir_response, read_json_body
from fhirstore.models import Resource
from fhirstore.terminology.exceptions import UnknownCodeSystem
from fhirstore.terminology.lookup import lookup, subsumes, validate_code
from fhirstore.terminology.records import ConceptRecord, Property
from fhirstore.terminology.storage import add_concepts, remove_concepts
from fhirstore.terminology.valuesets import (
    expand,
    expansion_resource,
    invalidate_expansion,
    stored_value_set,
    validate_in_value_set,
)
from jobsite.auth import scope_by_method
from jobsite.models import Scope


class OperationParameters:
    """An operation's parameters, from the query string (GET) or a Parameters body (POST)."""

    def __init__(self, values: dict[str, list[Any]]):
        self.values = values

    @classmethod
    def of(cls, request) -> OperationParameters:
        values: dict[str, list[Any]] = {}
        if request.method == "GET":
            for name in request.GET:
                values[name] = request.GET.getlist(name)
            return cls(values)
        body = read_json_body(request)
        if not isinstance(body, Mapping) or body.get("resourceType") != "Parameters":
            raise InvalidRequest("POST a Parameters resource")
        for parameter in body.get("parameter") or []:
            if not isinstance(parameter, Mapping) or not isinstance(parameter.get("name"), str):
                raise InvalidRequest("Every parameter needs a name")
            value = (
                parameter.get("resource")
                if "resource" in parameter
                else next((v for k, v in parameter.items() if k.startswith("value")), None)
            )
            values.setdefault(parameter["name"], []).append(value)
        return cls(values)

    def text(self, name: str, required: bool = False) -> str | None:
        found = self.values.get(name) or [None]
        if len(found) > 1:
            raise InvalidRequest(f"The parameter {name!r} may be given once")
        value = found[0]
        if value is None and required:
            raise InvalidRequest(f"The parameter {name!r} is required")
        if value is not None and not isinstance(value, str):
            raise InvalidRequest(f"The parameter {name!r} must be a string")
        return value

    def texts(self, name: str) -> list[str]:
        return [value for value in self.values.get(name, []) if isinstance(value, str)]

    def integer(self, name: str) -> int | None:
        value = (self.values.get(name) or [None])[0]
        if value is None:
            return None
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise InvalidRequest(f"The parameter {name!r} must be a whole number") from None
        if number < 0:
            raise InvalidRequest(f"The parameter {name!r} must not be negative")
        return number

    def boolean(self, name: str) -> bool:
        """A boolean parameter: valueBoolean (POST) or `true`/`false` (GET); false when absent."""
        value = (self.values.get(name) or [None])[0]
        if value in (None, False, "false"):
            return False
        if value in (True, "true"):
            return True
        raise InvalidRequest(f"The parameter {name!r} must be true or false")

    def coding(self, name: str) -> tuple[str | None, str | None, str | None]:
        """(system, code, version) of a Coding parameter (POST only), or Nones."""
        value = (self.values.get(name) or [None])[0]
        if value is None:
            return None, None, None
        if not isinstance(value, Mapping):
            raise InvalidRequest(f"The parameter {name!r} must be a Coding")
        return value.get("system"), value.get("code"), value.get("version")

    def resource(self, name: str) -> Mapping[str, Any] | None:
        value = (self.values.get(name) or [None])[0]
        if value is not None and not isinstance(value, Mapping):
            raise InvalidRequest(f"The parameter {name!r} must be a resource")
        return value


class TerminologyReadView(FhirView):
    """A read operation: `fhir:read` whether called by GET or POST."""

    required_scope = Scope.FHIR_READ

    def get(self, request, logical_id: str | None = None):
        return fhir_response(self.answer(OperationParameters.of(request), logical_id))

    def post(self, request, logical_id: str | None = None):
        return fhir_response(self.answer(OperationParameters.of(request), logical_id))

    def answer(self, parameters: OperationParameters, logical_id: str | None) -> dict:
        raise NotImplementedError


def _system_and_code(parameters: OperationParameters, logical_id: str | None) -> tuple[str, str, str | None]:
    """The system, code and version asked about: `system` (or `url`, $validate-code's name) + `code`
    (+ `version`), or `coding`; at instance level the system is the CodeSystem's url."""
    coding_system, coding_code, coding_version = parameters.coding("coding")
    system = (
        parameters.text("system")
        or parameters.text("url")
        or coding_system
        or (_code_system_url(logical_id) if logical_id else None)
    )
    code = parameters.text("code") or coding_code
    if not system or not code:
        raise InvalidRequest("Give system and code (or a coding)")
    return system, code, parameters.text("version") or coding_version


def _code_system_url(logical_id: str) -> str:
    url = (
        Resource.objects.filter(resource_type="CodeSystem", logical_id=logical_id, deleted=False)
        .values_list("body__url", flat=True)
        .first()
    )
    if not url:
        raise UnknownCodeSystem(f"No CodeSystem {logical_id!r}")
    return url


class LookupView(TerminologyReadView):
    def answer(self, parameters, logical_id):
        system, code, version = _system_and_code(parameters, logical_id)
        found = lookup(system, code, version, parameters.texts("property"), parameters.text("displayLanguage") or "")
        if found is None:
            raise InvalidRequest(f"Unknown code {code!r} in {system}")
        out = [
            {"name": "name", "valueString": found.version.name or found.version.system},
            {"name": "version", "valueString": found.version.version or ""},
            {"name": "display", "valueString": found.display},
        ]
        if found.abstract:
            out.append({"name": "abstract", "valueBoolean": True})
        for designation in found.designations:
            parts = [{"name": "value", "valueString": designation.value}]
            if designation.language:
                parts.insert(0, {"name": "language", "valueCode": designation.language})
            if designation.use_code:
                parts.insert(
                    -1, {"name": "use", "valueCoding": {"system": designation.use_system, "code": designation.use_code}}
                )
            out.append({"name": "designation", "part": parts})
        for name, kind, value, value_system in found.properties:
            out.append(
                {
                    "name": "property",
                    "part": [{"name": "code", "valueCode": name}, _typed_value(kind, value, value_system)],
                }
            )
        return {"resourceType": "Parameters", "parameter": out}


def _typed_value(kind: str, value: str, system: str) -> dict:
    if kind == "Coding":
        return {"name": "value", "valueCoding": {"system": system, "code": value}}
    if kind == "boolean":
        return {"name": "value", "valueBoolean": value == "true"}
    if kind == "integer":
        return {"name": "value", "valueInteger": int(value)}
    if kind == "decimal":
        return {"name": "value", "valueDecimal": float(value)}
    return {"name": "value", f"value{kind[0].upper()}{kind[1:]}": value}


class CodeSystemValidateCodeView(TerminologyReadView):
    def answer(self, parameters, logical_id):
        system, code, version = _system_and_code(parameters, logical_id)
        result = validate_code(system, code, version, parameters.text("display"))
        return _validation(result.valid, result.message, result.display)


def _validation(valid: bool, message: str, display: str) -> dict:
    out = [{"name": "result", "valueBoolean": valid}]
    if message:
        out.append({"name": "message", "valueString": message})
    if display:
        out.append({"name": "display", "valueString": display})
    return {"resourceType": "Parameters", "parameter": out}


class SubsumesView(TerminologyReadView):
    def answer(self, parameters, logical_id):
        system_a, code_a, version_a = parameters.coding("codingA")
        system_b, code_b, _ = parameters.coding("codingB")
        system = (
            parameters.text("system") or system_a or system_b or (_code_system_url(logical_id) if logical_id else None)
        )
        code_a, code_b = parameters.text("codeA") or code_a, parameters.text("codeB") or code_b
        if not system or not code_a or not code_b:
            raise InvalidRequest("Give system, codeA and codeB (or codingA and codingB)")
        outcome = subsumes(system, code_a, code_b, parameters.text("version") or version_a)
        return {"resourceType": "Parameters", "parameter": [{"name": "outcome", "valueCode": outcome}]}


def _value_set(parameters: OperationParameters, logical_id: str | None) -> Mapping[str, Any]:
    if logical_id:
        return stored_value_set(logical_id=logical_id)
    inline = parameters.resource("valueSet")
    if inline is not None:
        if inline.get("resourceType") != "ValueSet":
            raise InvalidRequest("The valueSet parameter must be a ValueSet")
        return inline
    url = parameters.text("url")
    if not url:
        raise InvalidRequest("Give the ValueSet: url (and valueSetVersion), or an inline valueSet")
    return stored_value_set(url=url, version=parameters.text("valueSetVersion"))


class ExpandView(TerminologyReadView):
    def answer(self, parameters, logical_id):
        value_set = _value_set(parameters, logical_id)
        text, count = parameters.text("filter") or "", parameters.integer("count")
        page = expand(
            value_set,
            text=text,
            offset=parameters.integer("offset") or 0,
            count=count,
            active_only=parameters.boolean("activeOnly"),
            display_language=parameters.text("displayLanguage") or "",
        )
        return expansion_resource(value_set, page, text=text, count=count)


class ValueSetValidateCodeView(TerminologyReadView):
    def answer(self, parameters, logical_id):
        value_set = _value_set(parameters, logical_id)
        coding_system, coding_code, _ = parameters.coding("coding")
        system, code = parameters.text("system") or coding_system, parameters.text("code") or coding_code
        if not system or not code:
            raise InvalidRequest("Give system and code (or a coding)")
        valid, display = validate_in_value_set(value_set, system, code)
        message = "" if valid else f"{system}|{code} is not in the ValueSet {value_set.get('url') or ''}".rstrip()
        return _validation(valid, message, display)


class InvalidateExpansionView(FhirView):
    """`POST ValueSet/[id]/$invalidate-expansion`: its stored expansion is stale; the next pre-expansion run
    expands it again (on-the-fly answers meanwhile)."""

    required_scope = scope_by_method(read=Scope.FHIR_READ, write=Scope.FHIR_WRITE)

    def post(self, request, logical_id: str):
        invalidated = invalidate_expansion(stored_value_set(logical_id=logical_id))
        return fhir_response(
            {"resourceType": "Parameters", "parameter": [{"name": "invalidated", "valueBoolean": bool(invalidated)}]}
        )


def _delta_request(request, concepts: str) -> tuple[str, list[ConceptRecord]]:
    """The system and the concepts of a `$apply-codesystem-delta-add` or `-remove` request; InvalidRequest
    when either is missing, or past TERMINOLOGY_DELTA_MAX_CONCEPTS (a larger change is a new version)."""
    parameters = OperationParameters.of(request)
    code_system = parameters.resource("codeSystem") or {}
    system = parameters.text("system") or code_system.get("url")
    if not system or not code_system.get("concept"):
        raise InvalidRequest(f"Give system and a codeSystem with {concepts}")
    records = _delta_records(code_system["concept"], None)
    limit = settings.TERMINOLOGY_DELTA_MAX_CONCEPTS
    if len(records) > limit:
        raise InvalidRequest(
            f"{len(records)} concepts: a delta takes at most {limit} "
            f"(TERMINOLOGY_DELTA_MAX_CONCEPTS); upload a new version"
        )
    return system, records


class DeltaAddView(FhirView):
    """`POST CodeSystem/$apply-codesystem-delta-add` (Parameters: system, codeSystem with `concept`s, nested
    for children, or a `parent` property): concepts added to the current version synchronously, up to
    TERMINOLOGY_DELTA_MAX_CONCEPTS; the stored expansions using the system become stale. Needs `terminology`."""

    required_scope = Scope.TERMINOLOGY

    def post(self, request):
        system, records = _delta_request(request, "concepts")
        added = add_concepts(system, records)
        return fhir_response({"resourceType": "Parameters", "parameter": [{"name": "added", "valueInteger": added}]})


class DeltaRemoveView(FhirView):
    """`POST CodeSystem/$apply-codesystem-delta-remove` (Parameters: system, codeSystem whose `concept`s name
    the codes, nested or not): those concepts removed from the current version synchronously, up to
    TERMINOLOGY_DELTA_MAX_CONCEPTS, each with its children; the stored expansions using the system become
    stale. Needs `terminology`."""

    required_scope = Scope.TERMINOLOGY

    def post(self, request):
        system, records = _delta_request(request, "the concepts to remove")
        removed = remove_concepts(system, [record.code for record in records])
        return fhir_response(
            {"resourceType": "Parameters", "parameter": [{"name": "removed", "valueInteger": removed}]}
        )


def _delta_records(concepts: Any, parent: str | None) -> list[ConceptRecord]:
    if not isinstance(concepts, list):
        raise InvalidRequest("CodeSystem.concept must be a list")
    records = []
    for concept in concepts:
        if not isinstance(concept, Mapping) or not isinstance(concept.get("code"), str) or not concept["code"]:
            raise InvalidRequest("Every concept needs a code")
        parents = [parent] if parent else []
        parents += [
            p.get("valueCode")
            for p in concept.get("property") or []
            if isinstance(p, Mapping) and p.get("code") == "parent" and isinstance(p.get("valueCode"), str)
        ]
        records.append(
            ConceptRecord(
                concept["code"],
                str(concept.get("display") or ""),
                parents,
                properties=[Property("kind", "delta", "code")],
            )
        )
        records += _delta_records(concept.get("concept") or [], concept["code"])
    return records

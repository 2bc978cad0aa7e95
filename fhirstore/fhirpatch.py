"""FHIRPath Patch (a `Parameters` of `operation`s: add, insert, delete, replace, move) applied to a resource.

Paths are the part of FHIRPath a patch needs to address elements: the resource type, then `.name` steps, each
optionally narrowed by `[n]`, `.first()`, `.last()` or `.where(criteria)` (the criteria evaluated by FHIRPath,
`fhirpathpy`, on each element). Evaluating a path here yields the *places* of the elements (their container
and key), which a general FHIRPath engine, returning copies of values, cannot. Whether an absent element
repeats (`add` makes a list or a single value) comes from the R4B models (`fhir.resources`); a choice element
(`value[x]`) is named by the patch's `name` and stored under the name of its value's type (`valueString`).

`parse_patch` checks the Parameters once (InvalidRequest listing every problem); `apply_patch` returns the
patched copy of a resource or raises PatchFailed (the spec: a path that must match one element matches none
or several, an index out of range, `add` of a single element that exists).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhirstore.exceptions import InvalidRequest, InvalidResource

OPERATIONS = {
    "add": ("path", "name", "value"),
    "insert": ("path", "index", "value"),
    "delete": ("path",),
    "replace": ("path", "value"),
    "move": ("path", "source", "destination"),
}
_STEP = re.compile(r"\.([A-Za-z][A-Za-z0-9_]*)|\[(\d+)\]")


class PatchFailed(InvalidResource):
    """The patch cannot be applied to this resource (422)."""


@dataclass(frozen=True)
class Operation:
    type: str
    path: str
    name: str | None = None
    value: Any = None
    value_type: str | None = None  # the suffix of the value's value[x] (`String`), for choice elements
    index: int | None = None
    source: int | None = None
    destination: int | None = None

    def __str__(self) -> str:
        return f"{self.type} at {self.path}" + (f" ({self.name})" if self.name else "")


@dataclass
class _Place:
    """Where an element is: `container[key]`, in the element `owner` of FHIR type `owner_type`."""

    container: dict | list
    key: str | int
    owner: dict
    owner_key: str  # the JSON name of the element in `owner`
    type_name: str | None  # the element's FHIR type (for the models), None when unknown or primitive

    @property
    def value(self) -> Any:
        return self.container[self.key]


def parse_patch(parameters: object) -> list[Operation]:
    """The operations of a FHIRPath Patch Parameters; InvalidRequest listing every problem."""
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise InvalidRequest("a FHIRPath Patch is a Parameters resource")
    operations, problems = [], []
    for number, parameter in enumerate(parameters.get("parameter") or [], 1):
        if not isinstance(parameter, dict) or parameter.get("name") != "operation":
            problems.append(f"parameter {number}: a FHIRPath Patch has only 'operation' parameters")
            continue
        parts = {part.get("name"): part for part in parameter.get("part") or [] if isinstance(part, dict)}
        kind = _value(parts.get("type"))[0]
        if kind not in OPERATIONS:
            problems.append(f"operation {number}: type must be one of {', '.join(OPERATIONS)}, got {kind!r}")
            continue
        missing = [name for name in OPERATIONS[kind] if name not in parts]
        if missing:
            problems.append(f"operation {number} ({kind}): needs {', '.join(missing)}")
            continue
        path, name = _value(parts["path"])[0], _value(parts.get("name"))[0]
        value, value_type = _value(parts.get("value"))
        numbers = {key: _value(parts.get(key))[0] for key in ("index", "source", "destination")}
        if not isinstance(path, str) or _steps(path) is None:
            problems.append(
                f"operation {number} ({kind}): path {path!r} is not Type.name… (with [n], first(), "
                "last() or where(…) after a name)"
            )
            continue
        if any(
            key in OPERATIONS[kind] and not (isinstance(v, int) and not isinstance(v, bool) and v >= 0)
            for key, v in numbers.items()
        ):
            problems.append(f"operation {number} ({kind}): index, source and destination are integers ≥ 0")
            continue
        if "name" in OPERATIONS[kind] and not (isinstance(name, str) and re.fullmatch(r"[A-Za-z]\w*", name)):
            problems.append(f"operation {number} ({kind}): name must be an element name")
            continue
        operations.append(
            Operation(kind, path, name, value, value_type, numbers["index"], numbers["source"], numbers["destination"])
        )
    if not operations and not problems:
        problems.append("the patch has no operation")
    if problems:
        raise InvalidRequest("; ".join(problems))
    return operations


def _value(part: dict | None) -> tuple[Any, str | None]:
    """The value of a part (`valueX`, or nested parts as an element) and its type suffix."""
    if part is None:
        return None, None
    for key, value in part.items():
        if key.startswith("value"):
            return value, key.removeprefix("value")
    if isinstance(part.get("part"), list):
        return {child.get("name"): _value(child)[0] for child in part["part"] if isinstance(child, dict)}, None
    return None, None


def _steps(path: str) -> list[tuple[str, str]] | None:
    """`Type.a[0].b.where(x).c` as [("type", "Type"), ("name", "a"), ("index", "0"), ("name", "b"),
    ("where", "x"), ("name", "c")]; None when the path is outside the subset."""
    head = re.match(r"[A-Z][A-Za-z]*", path)
    if head is None:
        return None
    steps, position = [("type", head.group())], head.end()
    while position < len(path):
        for function in ("first", "last"):
            if path.startswith(f".{function}()", position):
                steps.append((function, ""))
                position += len(function) + 3
                break
        else:
            if path.startswith(".where(", position):
                end = _closing(path, position + 6)
                if end is None:
                    return None
                steps.append(("where", path[position + 7 : end]))
                position = end + 1
                continue
            match = _STEP.match(path, position)
            if match is None:
                return None
            steps.append(("name", match.group(1)) if match.group(1) else ("index", match.group(2)))
            position = match.end()
    return steps


def _closing(text: str, opening: int) -> int | None:
    depth, quoted = 0, False
    for position in range(opening, len(text)):
        character = text[position]
        if character == "'" and text[position - 1] != "\\":
            quoted = not quoted
        elif not quoted and character == "(":
            depth += 1
        elif not quoted and character == ")":
            depth -= 1
            if depth == 0:
                return position
    return None


def apply_patch(resource: dict, operations: Sequence[Operation]) -> dict:
    """The resource with the operations applied in order (a copy; `resource` is unchanged)."""
    patched = copy.deepcopy(resource)
    for operation in operations:
        _apply(patched, operation)
    if (patched.get("resourceType"), patched.get("id")) != (resource.get("resourceType"), resource.get("id")):
        raise PatchFailed("a patch may not change the resource's type or id")
    return patched


def _apply(resource: dict, operation: Operation) -> None:
    if operation.type == "delete":
        places = _places(resource, operation.path)
        if len(places) > 1:
            raise PatchFailed(f"{operation}: the path matches {len(places)} elements, delete takes one")
        for place in places:
            _remove(place)
        return
    if operation.type == "replace":
        [place] = _one(resource, operation)
        place.container[place.key] = copy.deepcopy(operation.value)
        return
    if operation.type == "add":
        [place] = _one(resource, operation)
        owner = place.value
        if not isinstance(owner, dict):
            raise PatchFailed(f"{operation}: the path is not an element that can have children")
        key, repeats = _child(place.type_name, operation.name, operation.value_type)
        if key in owner and not isinstance(owner[key], list):
            raise PatchFailed(f"{operation}: {key} has a value already (use replace)")
        if key in owner or repeats:
            owner.setdefault(key, []).append(copy.deepcopy(operation.value))
        else:
            owner[key] = copy.deepcopy(operation.value)
        return
    parent_path, _, name = operation.path.rpartition(".")
    owners = _places(resource, parent_path) if re.fullmatch(r"[A-Za-z]\w*", name) else []
    if len(owners) != 1 or not isinstance(owners[0].value, dict):
        raise PatchFailed(f"{operation}: the path must end in .name, under exactly one element")
    items = owners[0].value.setdefault(name, []) if operation.type == "insert" else owners[0].value.get(name)
    if not isinstance(items, list):
        raise PatchFailed(f"{operation}: {name} is not a list")
    if operation.type == "insert":
        if operation.index > len(items):
            raise PatchFailed(f"{operation}: index {operation.index} is past the end ({len(items)} items)")
        items.insert(operation.index, copy.deepcopy(operation.value))
        return
    if operation.source >= len(items) or operation.destination >= len(items):
        raise PatchFailed(f"{operation}: source or destination is past the end ({len(items)} items)")
    items.insert(operation.destination, items.pop(operation.source))


def _one(resource: dict, operation: Operation) -> list[_Place]:
    places = _places(resource, operation.path)
    if len(places) != 1:
        raise PatchFailed(f"{operation}: the path matches {len(places)} elements, {operation.type} takes one")
    return places


def _remove(place: _Place) -> None:
    if isinstance(place.container, list):
        place.container.pop(place.key)
        if not place.container:
            place.owner.pop(place.owner_key, None)
    else:
        place.container.pop(place.key)


def _places(resource: dict, path: str) -> list[_Place]:
    steps = _steps(path)
    if steps is None:
        raise PatchFailed(f"path {path!r} is not Type.name… (with [n], first(), last() or where(…))")
    if steps[0][1] != resource.get("resourceType"):
        return []
    root = {"": resource}
    places = [_Place(root, "", root, "", resource["resourceType"])]
    for kind, argument in steps[1:]:
        if kind == "name":
            places = list(_children(places, argument))
        elif kind == "index":
            places = places[int(argument) : int(argument) + 1]
        elif kind == "first":
            places = places[:1]
        elif kind == "last":
            places = places[-1:]
        else:
            places = [place for place in places if _holds(place.value, argument)]
    return places


def _children(places: list[_Place], name: str) -> Iterator[_Place]:
    for place in places:
        owner = place.value
        if not isinstance(owner, dict):
            continue
        key = (
            name
            if name in owner
            else next(
                (
                    k
                    for k in owner
                    if k.startswith(name) and k[len(name) :][:1].isupper() and _is_choice(place.type_name, name)
                ),
                name,
            )
        )
        if key not in owner:
            continue
        type_name = _element_type(place.type_name, key)
        if isinstance(owner[key], list):
            yield from (_Place(owner[key], index, owner, key, type_name) for index in range(len(owner[key])))
        else:
            yield _Place(owner, key, owner, key, type_name)


def _holds(value: Any, criteria: str) -> bool:
    from fhirpathpy import evaluate

    try:
        result = evaluate(value, criteria, [])
    except Exception as error:  # fhirpathpy raises plain exceptions for expressions it cannot run
        raise PatchFailed(f"where({criteria}) cannot be evaluated: {error}") from None
    return result == [True]


@cache
def _fields(type_name: str | None) -> dict[str, str]:
    """The R4B model's elements of a FHIR type: JSON name → annotation text; {} when unknown."""
    if not type_name:
        return {}
    from fhir.resources.R4B import get_fhir_model_class

    try:
        model = get_fhir_model_class(type_name)
    except (KeyError, ValueError, ImportError, AttributeError):
        return {}
    return {(field.alias or name): str(field.annotation) for name, field in model.model_fields.items()}


def _element_type(type_name: str | None, key: str) -> str | None:
    found = re.search(r"abc\.(\w+)Type\b", _fields(type_name).get(key, ""))
    return found.group(1) if found else None


def _is_choice(type_name: str | None, name: str) -> bool:
    return name not in _fields(type_name) and any(key.startswith(name) for key in _fields(type_name))


def _child(type_name: str | None, name: str, value_type: str | None) -> tuple[str, bool]:
    """The JSON name an added element is stored under, and whether it repeats."""
    fields = _fields(type_name)
    key = name
    if name not in fields and value_type and f"{name}{value_type}" in fields:
        key = f"{name}{value_type}"
    return key, "List[" in fields.get(key, "")

"""References inside resources: finding them, telling their forms apart, and rewriting them in place.

A transaction bundle's `urn:uuid:` references and conditional references (`Practitioner?identifier=s|v`)
are rewritten to literal `Type/id` references before a resource is stored; everything stored afterwards
is a reference the store (or the wider web) can follow.
"""

from __future__ import annotations

from collections.abc import Callable

from fhirstore.resource_types import RESOURCE_TYPES
from fhirstore.search_params import parse_relative_reference


def reference_elements(node: object) -> list[dict]:
    """Every element of `node` with a string `reference` (a Reference), `contained` resources included."""
    found, stack = [], [node]
    pop, push = stack.pop, stack.append
    while stack:  # a stack, not recursion, and exact type checks: this runs on every resource of a bulk load
        item = pop()
        if type(item) is dict:
            if type(item.get("reference")) is str:
                found.append(item)
            values = item.values()
        else:
            values = item
        for value in values:
            kind = type(value)
            if kind is dict or kind is list:
                push(value)
    return found


def is_conditional_reference(reference: str) -> bool:
    """`Type?search` — a reference by search, to be resolved to the one resource it matches."""
    resource_type, separator, _ = reference.partition("?")
    return bool(separator) and resource_type in RESOURCE_TYPES


def rewrite_references(resource: dict, resolve: Callable[[str], str | None]) -> list[dict]:
    """Replace, in place, each reference for which `resolve` returns a new value; returns the references."""
    elements = reference_elements(resource)
    for element in elements:
        replacement = resolve(element["reference"])
        if replacement is not None:
            element["reference"] = replacement
    return elements


def reference_problem(reference: str, within: str = "the bundle") -> str | None:
    """Why a stored reference would be unusable, or None when it is a literal, absolute or contained one.

    `within`: what a `urn:` reference should have named an entry of (a bundle; an import's NDJSON files)."""
    if reference.startswith("#") or reference.startswith(("http://", "https://")):
        return None
    if parse_relative_reference(reference) is not None:
        return None
    if is_conditional_reference(reference):
        return f"conditional reference {reference!r} was not resolved"
    if reference.startswith("urn:"):
        return f"reference {reference!r} does not resolve to any resource of {within}"
    return f"reference {reference!r} is not Type/id, an absolute URL or #contained"

"""FHIRPath with a cost bound: custom SearchParameter expressions run on every write, in web threads and workers.

`fhirpathpy` evaluates anything: `matches('^(a+)+$')` on a 28-character name held the GIL for ~10 s with
Python's backtracking `re`, and six nested `select`s made 10⁶ values (407 MB). Here:
- `matches` and `replaceMatches` use RE2 (`google-re2`): linear time in the text, whatever the pattern; a
  pattern RE2 cannot run (backreferences, lookaround) is an error, as the FHIR spec's regex flavour allows;
- every function and operator of an evaluation counts the values it returns against MAX_VALUES and checks
  a deadline of MAX_SECONDS: past either, `ExpressionTooCostly` (the write indexes nothing for that
  parameter, as for any failing expression);
- a new expression is evaluated on a worst-case sample (`worst_case_sample`) when its SearchParameter is
  written, and refused there if it is too costly on it.

`fhirpathpy`'s function table is shared by every evaluation in the process; `bounded_fhirpath()` wraps it
once. Only evaluations run through `compile_bounded` carry a budget: the wrapper costs nothing elsewhere.
"""

from __future__ import annotations

import contextvars
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_VALUES = 100_000  # values all the calls of one evaluation may return: a normal expression returns a handful
MAX_SECONDS = 1.0  # an index expression takes milliseconds; a second is a bug or an attack
SAMPLE_WIDTH = 40  # repeats of each element in the worst-case sample: a product of four walks passes MAX_VALUES
SAMPLE_TEXT = "a" * 64 + "!"  # the shape that makes backtracking regexes explode (were they not RE2)


class ExpressionTooCostly(Exception):
    """The evaluation passed MAX_VALUES values or MAX_SECONDS."""


@dataclass
class _Budget:
    values_left: int
    deadline: float

    def spend(self, result: object) -> None:
        self.values_left -= len(result) if isinstance(result, list) else 1
        if self.values_left < 0:
            raise ExpressionTooCostly(f"the expression made more than {MAX_VALUES} values")
        if time.monotonic() > self.deadline:
            raise ExpressionTooCostly(f"the expression ran longer than {MAX_SECONDS} s")


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("fhirpath_budget", default=None)
_wrapped = False


def _re2_matches(ctx, coll, regex):
    """FHIRPath `matches` on RE2 (fhirpathpy's own, with `re.DOTALL`, otherwise)."""
    import re2
    from fhirpathpy.engine.invocations.strings import ensure_string_singleton

    if not regex or not coll:
        return []
    options = re2.Options()
    options.dot_nl = True
    return re2.compile(regex, options).search(ensure_string_singleton(coll)) is not None


def _re2_replace_matches(ctx, coll, regex, repl):
    """FHIRPath `replaceMatches` on RE2; `$1` in the replacement is the first group, as fhirpathpy reads it."""
    import re2
    from fhirpathpy.engine.invocations.strings import ensure_string_singleton

    string = ensure_string_singleton(coll)
    if isinstance(regex, list) or isinstance(repl, list):
        return []
    return re2.compile(regex).sub(re.sub(r"\$(\d+)", r"\\\1", repl), string)


def _counted(function: Callable) -> Callable:
    def counted(*args, **kwargs):
        budget = _budget.get()
        if budget is not None and time.monotonic() > budget.deadline:
            raise ExpressionTooCostly(f"the expression ran longer than {MAX_SECONDS} s")
        result = function(*args, **kwargs)
        if budget is not None:
            budget.spend(result)
        return result

    return counted


def bounded_fhirpath() -> None:
    """Put RE2 under `matches` / `replaceMatches` and the budget around every function (once per process)."""
    global _wrapped
    if _wrapped:
        return
    from fhirpathpy.engine.invocations import invocation_registry

    invocation_registry["matches"]["fn"] = _re2_matches
    invocation_registry["replaceMatches"]["fn"] = _re2_replace_matches
    for entry in invocation_registry.values():
        if "fn" in entry:
            entry["fn"] = _counted(entry["fn"])
    _wrapped = True


def compile_bounded(expression: str) -> Callable[[dict], list]:
    """A FHIRPath expression as a function of a resource (R4 model: choice types such as `value` resolve),
    each call within MAX_VALUES and MAX_SECONDS (`ExpressionTooCostly` past them)."""
    # ~0.2 s to import: only processes that index load it
    from fhirpathpy import compile as compile_fhirpath
    from fhirpathpy.models import models

    bounded_fhirpath()
    compiled = compile_fhirpath(expression, models["r4"])

    def evaluate(resource: dict) -> list:
        token = _budget.set(_Budget(MAX_VALUES, time.monotonic() + MAX_SECONDS))
        try:
            return compiled(resource)
        finally:
            _budget.reset(token)

    return evaluate


def worst_case_sample(resource_type: str) -> dict[str, Any]:
    """A resource to try a new expression on: the elements an expression commonly walks, each repeated
    SAMPLE_WIDTH times, with long strings (the shape a costly expression explodes on). About 20,000 nodes:
    a linear walk of it stays far below the budget, a product of walks does not."""
    coding = {"system": "urn:s", "code": SAMPLE_TEXT, "display": SAMPLE_TEXT}
    extension = {"url": SAMPLE_TEXT, "valueString": SAMPLE_TEXT}
    element = {
        "system": "urn:s",
        "value": SAMPLE_TEXT,
        "family": SAMPLE_TEXT,
        "given": [SAMPLE_TEXT] * 3,
        "text": SAMPLE_TEXT,
        "line": [SAMPLE_TEXT] * 3,
        "coding": [coding] * 3,
        "reference": f"Patient/{'a' * 64}",
        "extension": [extension] * 3,
    }
    repeated = [element] * SAMPLE_WIDTH
    return {
        "resourceType": resource_type,
        "id": "a" * 64,
        "extension": [extension] * SAMPLE_WIDTH,
        **{
            name: repeated
            for name in (
                "identifier",
                "name",
                "telecom",
                "address",
                "contact",
                "category",
                "code",
                "component",
                "performer",
                "participant",
                "item",
                "entry",
                "member",
                "coding",
                "note",
                "reasonCode",
            )
        },
        "subject": element,
        "status": SAMPLE_TEXT,
        "text": {"status": "generated", "div": SAMPLE_TEXT},
    }

"""`$expunge` requests, as HAPI names their parameters: `expungeDeletedResources`, `expungePreviousVersions`,
`expungeEverything` (booleans) and `limit` (the most versions removed, at least 1).

Where this server differs from HAPI, and why: `expungeEverything` is refused below the system level (HAPI
ignores it there; a client asking for it at a type surely meant something else), and without `limit` nothing is
capped (HAPI caps at 1,000 because it expunges within the request; here a type or the system is a job).
"""

from __future__ import annotations

from dataclasses import dataclass

from fhirjobs.expunge.exceptions import InvalidExpungeRequest
from fhirstore.expunge import ExpungeKinds

FLAGS = {
    "expungeDeletedResources": "deleted",
    "expungePreviousVersions": "previous",
    "expungeEverything": "everything",
}
INTEGER_VALUES = ("valueInteger", "valuePositiveInt", "valueUnsignedInt", "valueInteger64")


@dataclass(frozen=True)
class ExpungeRequest:
    kinds: ExpungeKinds
    limit: int | None = None  # None: no cap


def expunge_request(body: object, *, system: bool = False) -> ExpungeRequest:
    """The request a Parameters body makes; InvalidExpungeRequest when it asks for nothing, for something
    unknown, or for `expungeEverything` below the system level (`system` False)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidExpungeRequest("$expunge takes a Parameters resource")
    flags: dict[str, bool] = {}
    limit = None
    for parameter in body.get("parameter") or []:
        name = parameter.get("name") if isinstance(parameter, dict) else None
        if name in FLAGS:
            value = parameter.get("valueBoolean")
            if not isinstance(value, bool):
                raise InvalidExpungeRequest(f"{name} takes a valueBoolean")
            flags[FLAGS[name]] = value
        elif name == "limit":
            limit = next((parameter[key] for key in INTEGER_VALUES if key in parameter), None)
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
                raise InvalidExpungeRequest(f"Expunge limit may not be less than 1 (an integer): {limit!r}")
        else:
            raise InvalidExpungeRequest(f"not a parameter of $expunge: {name!r} (expected {', '.join(FLAGS)}, limit)")
    kinds = ExpungeKinds(**flags)
    if not any(kinds):
        raise InvalidExpungeRequest(f"$expunge needs one of {', '.join(FLAGS)} = true")
    if kinds.everything and not system:
        raise InvalidExpungeRequest("expungeEverything is a system-level operation: POST [base]/$expunge")
    return ExpungeRequest(kinds, limit)


def count_parameters(count: int) -> dict:
    """HAPI's answer: a Parameters with `count`."""
    return {"resourceType": "Parameters", "parameter": [{"name": "count", "valueInteger": count}]}

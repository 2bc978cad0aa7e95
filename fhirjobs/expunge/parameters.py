"""`$expunge` requests, as HAPI names their parameters; only `expungePreviousVersions=true` is done so far."""

from __future__ import annotations

from fhirjobs.expunge.exceptions import InvalidExpungeRequest

NOT_YET = ("expungeDeletedResources", "expungeEverything", "limit")


def check_expunge_parameters(body: object) -> None:
    """The Parameters must ask for `expungePreviousVersions=true` and for nothing this server does not do yet."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidExpungeRequest("$expunge takes a Parameters resource")
    values = {}
    for parameter in body.get("parameter") or []:
        name = parameter.get("name") if isinstance(parameter, dict) else None
        values[name] = (
            next((v for k, v in parameter.items() if k.startswith("value")), None)
            if isinstance(parameter, dict)
            else None
        )
    unknown = sorted(str(name) for name in values if name != "expungePreviousVersions")
    if unknown:
        raise InvalidExpungeRequest(
            f"not supported: {', '.join(unknown)} (this server expunges previous versions only;"
            f" {', '.join(NOT_YET)} are not done yet)"
        )
    if values.get("expungePreviousVersions") is not True:
        raise InvalidExpungeRequest("$expunge needs expungePreviousVersions=true (the only kind done yet)")


def count_parameters(count: int) -> dict:
    """HAPI's answer: a Parameters with `count`."""
    return {"resourceType": "Parameters", "parameter": [{"name": "count", "valueInteger": count}]}

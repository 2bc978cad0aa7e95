"""`$delete-expunge` requests ⇄ DELETE_EXPUNGE job parameters, and its report as an OperationOutcome.

The parameter names are HAPI's: `url` (1..*), `batchSize`, `cascade`, `cascadeMaxRounds`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhirjobs.deleteexpunge.exceptions import InvalidDeleteExpungeRequest
from fhirstore.exceptions import InvalidRequest

_KINDS = {"url": str, "batchSize": int, "cascade": bool, "cascadeMaxRounds": int}


@dataclass(frozen=True)
class DeleteExpungeRequest:
    urls: tuple[str, ...]
    batch_size: int | None = None  # None: the job's default
    cascade: bool = False
    cascade_max_rounds: int | None = None

    def job_parameters(self) -> dict[str, Any]:
        parameters: dict[str, Any] = {"urls": list(self.urls), "cascade": self.cascade}
        if self.batch_size is not None:
            parameters["batch_size"] = self.batch_size
        if self.cascade_max_rounds is not None:
            parameters["cascade_max_rounds"] = self.cascade_max_rounds
        return parameters


def parse_delete_expunge_parameters(body: object) -> DeleteExpungeRequest:
    """A `$delete-expunge` Parameters body as a request; InvalidDeleteExpungeRequest lists every problem."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidRequest("$delete-expunge takes a Parameters resource")
    collected: dict[str, list] = {name: [] for name in _KINDS}
    problems = []
    for parameter in body.get("parameter") or []:
        name = parameter.get("name") if isinstance(parameter, dict) else None
        value = _value(parameter) if isinstance(parameter, dict) else None
        kind = _KINDS.get(name)
        if kind is not None and isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
            collected[name].append(value)
        else:
            problems.append(
                f"parameter {name!r} is not understood (url, batchSize, cascade, cascadeMaxRounds)"
                " or has no value of its type"
            )
    if not collected["url"]:
        problems.append("at least one url (Type?search) is needed: what to delete")
    problems += [
        f"{name} may be given once" for name in ("batchSize", "cascade", "cascadeMaxRounds") if len(collected[name]) > 1
    ]
    if problems:
        raise InvalidDeleteExpungeRequest(problems)
    return DeleteExpungeRequest(
        tuple(url if "?" in url else f"{url}?" for url in collected["url"]),
        next(iter(collected["batchSize"]), None),
        next(iter(collected["cascade"]), False),
        next(iter(collected["cascadeMaxRounds"]), None),
    )


def _value(parameter: dict) -> object:
    return next((value for key, value in parameter.items() if key.startswith("value")), None)


def report_outcome(report: dict[str, Any]) -> dict[str, Any]:
    """The completed job: an OperationOutcome with the total, then one issue per type."""
    issues = [
        {
            "severity": "information",
            "code": "informational",
            "diagnostics": f"Delete-expunge completed: {report['total']} resources deleted",
        }
    ]
    issues += [
        {"severity": "information", "code": "informational", "diagnostics": f"{resource_type}: {count} deleted"}
        for resource_type, count in report["deleted"].items()
    ]
    return {"resourceType": "OperationOutcome", "issue": issues}

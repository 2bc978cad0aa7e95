"""`$hapi.fhir.bulk-patch` requests ⇄ BULK_PATCH job parameters, and its report as an OperationOutcome.

The parameter names are HAPI's: `patch` (a FHIRPath Patch Parameters, as a resource), `url` (1..*),
`dryRun`, `batchSize`.
"""

from __future__ import annotations

from typing import Any

from fhirjobs.bulkpatch.exceptions import InvalidBulkPatchRequest
from fhirstore.exceptions import InvalidRequest

_KINDS = {
    "patch": ("resource", dict),
    "url": ("valueString", str),
    "dryRun": ("valueBoolean", bool),
    "batchSize": ("valueInteger", int),
}


def parse_bulk_patch_parameters(body: object) -> dict[str, Any]:
    """A `$hapi.fhir.bulk-patch` Parameters body as the job's parameters; InvalidBulkPatchRequest lists every
    problem of its form (the job's own checks judge the urls and the patch)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidRequest("$hapi.fhir.bulk-patch takes a Parameters resource")
    collected: dict[str, list] = {name: [] for name in _KINDS}
    problems = []
    for parameter in body.get("parameter") or []:
        name = parameter.get("name") if isinstance(parameter, dict) else None
        key, kind = _KINDS.get(name, (None, None))
        value = parameter.get(key) if key else None
        if kind is not None and isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
            collected[name].append(value)
        else:
            problems.append(
                f"parameter {name!r} is not understood (patch, url, dryRun, batchSize) or has no {key or 'value'}"
            )
    if not collected["patch"]:
        problems.append("a patch (a FHIRPath Patch Parameters, as the parameter's resource) is needed")
    if not collected["url"]:
        problems.append("at least one url (Type?search) is needed: what to patch")
    problems += [f"{name} may be given once" for name in ("patch", "dryRun", "batchSize") if len(collected[name]) > 1]
    if problems:
        raise InvalidBulkPatchRequest("; ".join(problems))
    parameters = {
        "urls": [url if "?" in url else f"{url}?" for url in collected["url"]],
        "patch": collected["patch"][0],
        "dry_run": next(iter(collected["dryRun"]), False),
    }
    if collected["batchSize"]:
        parameters["batch_size"] = collected["batchSize"][0]
    return parameters


def report_outcome(report: dict[str, Any]) -> dict[str, Any]:
    """The completed job: the totals, one issue per type, one error per failed resource, a dry run's diffs."""
    verb = "would be patched" if report["dry_run"] else "patched"
    issues = [
        {
            "severity": "information",
            "code": "informational",
            "diagnostics": f"Bulk patch {'dry run ' if report['dry_run'] else ''}completed: {report['total']} "
            f"resources {verb}, {report['unchanged']} unchanged, {report['failed_count']} failed",
        }
    ]
    issues += [
        {"severity": "information", "code": "informational", "diagnostics": f"{resource_type}: {count} {verb}"}
        for resource_type, count in report["patched"].items()
    ]
    issues += [
        {"severity": "error", "code": "processing", "diagnostics": f"{reference}: {message}", "expression": [reference]}
        for reference, message in report["failed"].items()
    ]
    issues += [
        {
            "severity": "information",
            "code": "informational",
            "expression": [diff["resource"]],
            "diagnostics": f"{diff['resource']} {diff['element']}: {diff['before']!r} → {diff['after']!r}",
        }
        for diff in report["diffs"]
    ]
    return {"resourceType": "OperationOutcome", "issue": issues}

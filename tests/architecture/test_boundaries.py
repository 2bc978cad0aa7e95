"""The apps' edges, read from the source: who may import whom, and no import cycles inside `batch`.

`batch` and `scheduling` know nothing of FHIR; `fhirstore` (and every other app) reaches the engine only
through its public modules. Every import counts, also those inside functions: a cycle hidden in a
function is still a cycle.
"""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
# batch.queues names the Redis queues (`batch2-work-notification-<node>-<module>`): a deployment contract
# that the Celery app's configuration reads before Django's models are loaded.
# batch.metrics names the engine's Prometheus metrics, another (dashboards and alerts are built on the names);
# the shell's /metrics exposes them.
BATCH_PUBLIC_MODULES = {"batch.api", "batch.control", "batch.metrics", "batch.queues", "batch.testing"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files(package: str) -> list[Path]:
    return sorted(path for path in (PROJECT / package).rglob("*.py") if "migrations" not in path.parts)


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in the file outside `if TYPE_CHECKING:`; `from a import b` yields
    `a.b` when `a.b` is a module of the project and `a` otherwise."""
    tree = ast.parse(path.read_text(), str(path))
    type_checking = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                     and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                     for statement in block.body for node in ast.walk(statement)}
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = (PROJECT / Path(*candidate.split("."))).with_suffix(".py").exists() or (
                    PROJECT / Path(*candidate.split("."))).is_dir()
                yield node.lineno, candidate if is_module else node.module


def imports_of(package: str, prefix: str) -> list[str]:
    return [f"{path.relative_to(PROJECT)}:{line} imports {module}"
            for path in source_files(package) for line, module in imported_modules(path)
            if module == prefix or module.startswith(prefix + ".")]


@pytest.mark.parametrize("package", ["fhirstore", "jobsite", "scheduling"])  # bench/ measures the engine inside
def test_other_apps_use_only_the_public_modules_of_batch(package):
    private = [found for found in imports_of(package, "batch")
               if found.rsplit(" ", 1)[1] not in BATCH_PUBLIC_MODULES]
    assert private == []


@pytest.mark.parametrize("package", ["batch", "scheduling"])
def test_the_engine_and_the_scheduler_know_nothing_of_fhir(package):
    assert imports_of(package, "fhirstore") == []


def test_the_scheduler_does_not_depend_on_the_batch_engine():
    assert imports_of("scheduling", "batch") == []


def test_batch_has_no_import_cycle():
    graph = {module_name(path): {module for _, module in imported_modules(path) if module.startswith("batch.")}
             for path in source_files("batch")}
    cycles = []
    for start in graph:  # a depth-first walk from each module back to itself
        stack = [(start, [start])]
        while stack:
            module, trail = stack.pop()
            for imported in graph.get(module, ()):
                if imported == start:
                    cycles.append(" -> ".join(trail + [start]))
                elif imported not in trail and len(trail) < len(graph):
                    stack.append((imported, trail + [imported]))
    assert cycles == [], "\n".join(sorted(set(cycles))[:20])

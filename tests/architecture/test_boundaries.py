"""The apps' edges, read from the source: who may import whom, through which names, and no import cycle.

The layers, bottom up: `jobsite` (tokens, auth, display: what every app shares); `batch` and `scheduling`
(know nothing of FHIR) and `fhirstore` (knows neither the engine nor the jobs); `fhirjobs`, where the engine
and the store meet; the shell `heavylift` on top, which nothing imports (apps meet it only through settings
strings). A job package under `fhirjobs` imports no sibling job, only `fhirjobs.common`. Outside the engine,
code uses only the names the engine's public modules export (their `__all__`).

Every import counts, also those inside functions and relative ones: a cycle hidden in a function is still a
cycle. Imports under `if TYPE_CHECKING:` do not run and do not count. The apps are found on disk (every
top-level package of the project but `tests` and `bench`), so a new app fails here until it has a place in
LAYERS.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
NOT_APPS = {"tests", "bench"}  # they may reach inside anything: they test and measure it
# What each app may import besides itself. No app may import one above it: the arrows all point down.
LAYERS = {
    "blobstore": set(),  # files in the database for anyone (export files by setting): knows nothing of the rest
    "jobsite": set(),
    "scheduling": {"jobsite"},
    "batch": {"jobsite", "scheduling"},
    "fhirstore": {"jobsite", "scheduling"},
    "fhirjobs": {"jobsite", "scheduling", "batch", "fhirstore"},
    "heavylift": {"jobsite", "scheduling", "batch", "fhirstore", "fhirjobs"},
}
# batch.queues names the Redis queues (`batch2-work-notification-<node>-<module>`): a deployment contract
# that the Celery app's configuration reads before Django's models are loaded.
# batch.metrics names the engine's Prometheus metrics, another (dashboards and alerts are built on the names);
# the shell's /metrics exposes them.
BATCH_PUBLIC_MODULES = {"batch.api", "batch.control", "batch.metrics", "batch.queues", "batch.testing"}
JOBS_COMMON = "fhirjobs.common"


@dataclass(frozen=True)
class Import:
    where: str  # path:line
    importer: str  # the importing module
    module: str  # the imported module (or the package a name came from)
    name: str | None  # `from module import name` when name is not a module itself

    def __str__(self) -> str:
        return f"{self.where} {self.importer} imports {self.module}" + (f".{self.name}" if self.name else "")


def apps() -> list[str]:
    return sorted(
        path.name
        for path in PROJECT.iterdir()
        if (path / "__init__.py").is_file() and path.name not in NOT_APPS and not path.name.startswith(".")
    )


def source_files(package: str) -> list[Path]:
    return sorted(path for path in (PROJECT / package).rglob("*.py") if "migrations" not in path.parts)


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_project_module(name: str) -> bool:
    path = PROJECT / Path(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_in(path: Path) -> Iterator[Import]:
    """Every import of the file outside `if TYPE_CHECKING:`, relative ones resolved; `from a import b` is an
    import of module `a.b` when that is a module of the project, else of name `b` from `a`."""
    tree = ast.parse(path.read_text(), str(path))
    type_checking = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
        for statement in block.body
        for node in ast.walk(statement)
    }
    importer = module_name(path)
    package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        where = f"{path.relative_to(PROJECT)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(where, importer, alias.name, None)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if package else []
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                if is_project_module(candidate):
                    yield Import(where, importer, candidate, None)
                else:
                    yield Import(where, importer, source, alias.name)


@cache
def project_imports() -> tuple[Import, ...]:
    return tuple(
        found
        for app in apps()
        for path in source_files(app)
        for found in imports_in(path)
        if found.module.split(".")[0] in LAYERS or found.module.split(".")[0] in apps()
    )


def app_of(module: str) -> str:
    return module.split(".")[0]


@cache
def exported_names(module: str) -> frozenset[str]:
    """A public module's `__all__`; without one, the public names it defines itself (not those it imports)."""
    tree = ast.parse((PROJECT / Path(*module.split("."))).with_suffix(".py").read_text())
    defined = set()
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        for target in targets:
            if isinstance(target, ast.Name) and target.id == "__all__":
                return frozenset(ast.literal_eval(node.value))
            if isinstance(target, ast.Name):
                defined.add(target.id)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
    return frozenset(name for name in defined if not name.startswith("_"))


def test_every_app_has_a_place_in_the_layers():
    assert [app for app in apps() if app not in LAYERS] == [], "add the new app to LAYERS, where it belongs"


def test_no_app_imports_one_above_it_or_beside_it():
    upward = [
        str(found)
        for found in project_imports()
        if app_of(found.module) != app_of(found.importer)
        and app_of(found.module) not in LAYERS.get(app_of(found.importer), set())
    ]
    assert upward == [], "\n".join(upward)


def test_the_store_imports_neither_the_engine_nor_the_jobs():
    reaching = [
        str(found)
        for found in project_imports()
        if app_of(found.importer) == "fhirstore" and app_of(found.module) in ("batch", "fhirjobs")
    ]
    assert reaching == [], "\n".join(reaching)


def test_other_apps_use_only_the_names_the_engines_public_modules_export():
    private = []
    for found in project_imports():
        if app_of(found.importer) == "batch" or app_of(found.module) != "batch":
            continue
        if found.module not in BATCH_PUBLIC_MODULES and found.module != "batch":
            private.append(f"{found} (not a public module: {', '.join(sorted(BATCH_PUBLIC_MODULES))})")
        elif found.module == "batch" and found.name is not None:
            private.append(f"{found} (the package itself exports nothing)")
        elif found.name is not None and found.name not in exported_names(found.module):
            private.append(f"{found} (not in {found.module}'s __all__)")
    assert private == [], "\n".join(private)


def test_a_job_package_imports_no_sibling_job_only_the_common_package():
    """`fhirjobs.common` counts as a job package here: it imports none of the jobs either."""

    def job_of(module: str) -> str | None:
        parts = module.split(".")
        return ".".join(parts[:2]) if parts[0] == "fhirjobs" and len(parts) > 1 else None

    siblings = [
        str(found)
        for found in project_imports()
        if job_of(found.importer)
        and job_of(found.module)
        and job_of(found.module) not in (job_of(found.importer), JOBS_COMMON)
    ]
    assert siblings == [], "\n".join(siblings)


def test_no_import_cycle_anywhere():
    graph: dict[str, set[str]] = {}
    for found in project_imports():
        graph.setdefault(found.importer, set()).add(found.module)
    cycles = [" -> ".join(component) for component in strongly_connected(graph) if len(component) > 1]
    assert cycles == [], "\n".join(cycles)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components: each of more than one module is a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(start: str) -> None:
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            module, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                    break
                if successor in on_stack:
                    low[module] = min(low[module], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[module])
                if low[module] == index[module]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == module:
                            break
                    components.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return components

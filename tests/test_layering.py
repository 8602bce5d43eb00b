"""The house goes one way: no import cycle, no arrow back up, a pure verifier.

Every module of `trust/` and `cli/` is parsed (function-local and TYPE_CHECKING imports
included: an arrow is an arrow whenever it runs) and its imports are checked against the rooms
below. A module may import only modules of its own room or of rooms below it, and never in a
circle. The verifier room may not touch the network, the file system, the settings loader, the
policy evaluation or the engine.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Rooms from the bottom up; a module's room is its longest matching prefix here.
ROOMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("leaves", ("trust.errors", "trust.settings", "trust.version")),
    ("reference", ("trust.reference", "trust.targets")),
    (
        "verifier",
        (
            "trust.notary.cjson",
            "trust.notary.keys",
            "trust.notary.signatures",
            "trust.notary.x509root",
            "trust.notary.metadata",
            "trust.notary.trusted_set",
            "trust.notary",
        ),
    ),
    (
        "transport",
        (
            "trust.preconnect",
            "trust.http",
            "trust.notary.remote",
            "trust.notary.pool",
            "trust.credentials",
            "trust.notary.cache",
        ),
    ),
    ("trust source", ("trust.notary.client", "trust.tufview", "trust.tufsource")),
    ("policy", ("trust.policy", "trust.route", "trust.policy_file", "trust.config")),
    ("resolver", ("trust.lookup", "trust.evidence")),
    (
        "service",
        (
            "trust.service",
            "trust.prefetch",
            "trust.batch",
            "trust.safewrite",
            "trust.manifests",
            "trust.pinning",
            "trust.sarif",
            "trust.pin",
        ),
    ),
    ("engine", ("trust.engine", "trust.trusted_pull")),
    ("front ends", ("trust.proxy", "trust.api", "cli")),
)
#: The package itself (`trust/__init__.py`, the public API) is a front end too, by exact name.
PACKAGE = "trust"

VERIFIER = (
    "trust.notary.cjson",
    "trust.notary.keys",
    "trust.notary.signatures",
    "trust.notary.x509root",
    "trust.notary.metadata",
    "trust.notary.trusted_set",
)
#: What the verifier may never import (besides every room above it).
VERIFIER_FORBIDDEN = ("socket", "ssl", "requests", "urllib3", "docker", "http", "urllib.request")
#: Calls that would be file I/O inside the verifier.
FILE_IO_CALLS = {
    "open",
    "read_bytes",
    "read_text",
    "write_bytes",
    "write_text",
    "mkdir",
    "unlink",
    "iterdir",
    "glob",
    "rglob",
    "exists",
    "is_file",
    "stat",
    "listdir",
    "scandir",
}
#: The line budget and the words a longer module must carry at its top to explain itself.
MAX_LINES = 500
LONG_REASON = "Longer than 500 lines because"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in ("trust", "cli"):
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import in the file, resolved to project modules
    where the name is one (`from trust.x import y` is `trust.x.y` when that is a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                yield (candidate if candidate in MODULES else module), node.lineno


def _project(module: str) -> str | None:
    """The project module an import refers to (a package import counts as the package)."""
    while module:
        if module in MODULES:
            return module
        module = module.rpartition(".")[0]
    return None


def _room(module: str) -> int:
    if module == PACKAGE:
        return len(ROOMS) - 1
    best, best_len = -1, -1
    for index, (_label, prefixes) in enumerate(ROOMS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


GRAPH = {
    name: sorted(
        {
            (target, line)
            for imported, line in _imports(name, path)
            if (target := _project(imported)) is not None and target != name
        }
    )
    for name, path in MODULES.items()
}


def test_every_module_has_a_room() -> None:
    assert [name for name in MODULES if _room(name) < 0] == []


def test_no_import_cycle() -> None:
    """Tarjan's strongly connected components over the whole import graph."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target, _line in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in GRAPH:
        if node not in index:
            visit(node)
    assert cycles == []


def test_no_arrow_back_up() -> None:
    """A module imports only its own room or rooms below (the package `trust` itself, the
    public API, is a front end: nothing inside may import it)."""
    upward = [
        f"{name}:{line} imports {target} ({ROOMS[_room(target)][0]} above {ROOMS[_room(name)][0]})"
        for name, edges in GRAPH.items()
        for target, line in edges
        if _room(target) > _room(name) or (target == "trust" and name.startswith("trust."))
    ]
    assert upward == []


def test_trust_never_imports_cli() -> None:
    bad = [
        f"{name}:{line}"
        for name, edges in GRAPH.items()
        if name.split(".")[0] == "trust"
        for target, line in edges
        if target.split(".")[0] == "cli"
    ]
    assert bad == []


@pytest.mark.parametrize("name", VERIFIER)
def test_verifier_is_pure(name: str) -> None:
    """No network, engine, loader, policy or session import, and no file I/O call."""
    path = MODULES[name]
    problems = []
    for imported, line in _imports(name, path):
        top = imported.split(".")[0]
        if imported in VERIFIER_FORBIDDEN or top in VERIFIER_FORBIDDEN:
            problems.append(f"{name}:{line} imports {imported}")
        target = _project(imported)
        if target is not None and target.startswith("trust.") and _room(target) > _room(name):
            problems.append(f"{name}:{line} imports {target}")
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if called in FILE_IO_CALLS:
                problems.append(f"{name}:{node.lineno} calls {called}()")
    assert problems == []


def test_no_reaching_into_private_members() -> None:
    """`from trust.x import _name` or `module._name` across modules is a private seam."""
    problems = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                ("trust", "cli")
            ):
                problems += [
                    f"{name}:{node.lineno} imports {node.module}.{alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
    assert problems == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_size(name: str) -> None:
    text = MODULES[name].read_text()
    lines = text.count("\n")
    if lines > MAX_LINES:
        doc = ast.get_docstring(ast.parse(text)) or ""
        assert LONG_REASON in doc, f"{name} has {lines} lines and no reason at its top"


def test_public_names_do_not_collide_with_submodules() -> None:
    """`import trust.x` sets the attribute `trust.x` to the module: an API function of the same
    name would be replaced by it as soon as anything imported that module."""
    import trust

    submodules = {path.stem for path in (ROOT / "trust").iterdir()}
    assert sorted(set(trust.__all__) & submodules) == []
    assert {"__version__", *trust._HOME} == set(trust.__all__)

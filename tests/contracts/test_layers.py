"""The layers the architecture draws, read from the source's imports.

Every import counts: those at the top of a module, those inside functions, and those under
``if TYPE_CHECKING:``, because a type-only import still ties the two modules together for whoever
reads or moves them. The graph is built from the files with :mod:`ast`, nothing is imported.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("siscom", "supervisors")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


SOURCES = _sources()


def _imported(module: str, path: Path) -> Iterator[str]:
    """Yields every project module ``module`` names in an import statement, anywhere in it.

    ``from pkg import name`` counts as ``pkg.name`` when that is a module, else as ``pkg``; a
    package's ``__init__`` is not counted as imported by its submodules' imports (Python runs it,
    but it holds no code the submodule uses unless named).
    """
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                drop = node.level - 1 if is_package else node.level
                base = base[: len(base) - drop] if drop else base
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                yield candidate if candidate in SOURCES else source


#: Every module's imports, the project's and the dependencies' alike.
IMPORTS = {module: set(_imported(module, path)) for module, path in SOURCES.items()}
#: The project's modules each module imports.
GRAPH = {
    module: {name for name in names if name.split(".")[0] in PACKAGES and name != module}
    for module, names in IMPORTS.items()
}


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _violations(importer: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if _within(module, importer)
        for target in targets
        if any(_within(target, banned) for banned in forbidden)
    )


def test_the_graph_reads_every_module_and_sees_known_imports() -> None:
    # Guards the reader itself: an empty or blind graph would pass every rule below.
    assert len(GRAPH) > 50
    assert "siscom.core.protocol" in GRAPH["siscom.sessions.session"]
    assert "supervisors.actor" in GRAPH["supervisors"]


@pytest.mark.parametrize(
    ("importer", "forbidden"),
    [
        ("supervisors", ("siscom",)),
        (
            "siscom.core",
            (
                "siscom.pipeline",
                "siscom.sessions",
                "siscom.web",
                "siscom.security",
                "siscom.config",
                "siscom.metrics",
                "supervisors",
            ),
        ),
        ("siscom.pipeline", ("siscom.web",)),
        ("siscom.sessions", ("siscom.web",)),
    ],
)
def test_a_layer_imports_nothing_from_the_layers_it_must_not_know(importer: str, forbidden: tuple[str, ...]) -> None:
    assert _violations(importer, forbidden) == []


#: The server subpackage: the only code that reaches below the public APIs of these.
SERVER = "siscom.web.server"
#: Dependencies' modules that are internals (the servers' own entry points stay allowed:
#: ``hypercorn.config`` and ``hypercorn.asyncio``, which ``siscom serve`` starts Hypercorn with).
INTERNALS = (
    "h11",
    "wsproto",
    "quart.asgi",
    "quart.wrappers",
    "werkzeug.local",
    "werkzeug.sansio",
    "hypercorn.protocol",
    "hypercorn.asyncio.tcp_server",
    "hypercorn.asyncio.worker_context",
)


def test_server_internals_are_reached_only_through_the_server_package() -> None:
    outside = [module for module in IMPORTS if module.split(".")[0] == "siscom" and not _within(module, SERVER)]
    assert any(SERVER in IMPORTS[module] for module in outside)  # the interface is in use
    reaching_in = sorted(
        f"{module} imports {name}"
        for module in outside
        for name in IMPORTS[module]
        if name.startswith(SERVER + ".") or any(_within(name, internal) for internal in INTERNALS)
    )
    assert reaching_in == []


def test_the_server_package_is_where_the_internals_are_used() -> None:
    # Guards the rule above: it must see the imports it forbids where they are allowed.
    used = {name for module in IMPORTS if _within(module, SERVER) for name in IMPORTS[module]}
    assert {"wsproto.connection", "quart.asgi", "werkzeug.local"} <= used


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_two_modules_import_each_other_even_through_others() -> None:
    assert _cycles(GRAPH) == []


def _part(module: str) -> str:
    """The part of the code a module belongs to: ``supervisors``, or ``siscom.<first name>``."""
    names = module.split(".")
    return ".".join(names[:2]) if names[0] == "siscom" else names[0]


def test_no_two_parts_import_each_other_even_through_others() -> None:
    # Module by module a package may look acyclic while, taken whole, it leans on a package that
    # leans back on it (security on config for settings, config on security for its parsers).
    parts: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        parts.setdefault(_part(module), set()).update(
            _part(target) for target in targets if _part(target) != _part(module)
        )
    assert _cycles(parts) == []

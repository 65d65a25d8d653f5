"""The package layout: every module imports; counting every import (inside functions too), the modules form no cycle
and no import runs up the layers of docs/architecture.md."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "mapflow"


def module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "server" in path.relative_to(PACKAGE).parts:  # runs inside the NDIF server, not importable here
            continue
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


# The layers, bottom floor first (docs/architecture.md draws the same order top floor first). A module may import
# modules on its own floor or below, never above. Keys are the first name under ``mapflow`` ("" is the package root).
LAYERS = (
    ("errors", "differences"),  # pure modules: any layer uses them
    ("inputs", "data", "embedded"),
    ("models",),
    ("testing",),  # builders of test and bench models (random weights) over the adapters: nothing below uses them
    ("knockout",),
    ("readouts", "remote"),
    ("backends",),  # where a run's traces execute (local, NDIF): uses knockout cells and the remote client
    ("results",),
    ("analysis", "pruning"),  # pruning: a map turned into a pruned forward pass and its evaluation
    ("viz",),
    # the shells (organism: trains and checks the organisms; scale: a run's shards as Dask tasks)
    ("cli", "api", "ndif_local", "organism", "scale", "__main__", ""),
    ("studies",),  # the shipped studies use analysis.context and viz: the top floor
)

# Upward imports that stay for now, each with its reason; any other one fails the test, and one fixed fails it too
# (so this list only shrinks).
KNOWN_UPWARD: dict[tuple[str, str], str] = {}


def layered_modules() -> dict[str, Path]:
    """Every mapflow module, the shipped studies (``studies/``, installed as ``mapflow.studies``) included."""
    names = module_names()
    for path in sorted((REPO / "studies").rglob("*.py")):
        parts = ["mapflow", "studies", *path.relative_to(REPO / "studies").with_suffix("").parts]
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imported_names(name: str, source: str, is_package: bool) -> set[str]:
    """Every module path ``name`` imports anywhere (module level, inside functions and classes, under ``try``), except
    under ``if TYPE_CHECKING`` (never run). ``from a import b`` gives ``a`` and ``a.b`` (``b`` may be a module)."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()

    def resolve(module: str | None, level: int) -> str:
        if not level:
            return module or ""
        base = package.split(".")[: len(package.split(".")) - (level - 1)]
        return ".".join(base + ([module] if module else []))

    def visit(node):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for statement in node.orelse:
                visit(statement)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = resolve(node.module, node.level)
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


def import_edges(name: str, source: str, is_package: bool, known: set[str]) -> set[str]:
    """The known modules importing ``name`` runs: each one named and the packages above it (importing a.b.c runs
    a/__init__, a.b/__init__ and a.b.c), less ``name`` itself and its own parent packages."""
    edges = set()
    for target in imported_names(name, source, is_package):
        parts = target.split(".")
        edges.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {t for t in edges & known if t != name and not name.startswith(t + ".")}


def import_graph() -> dict[str, set[str]]:
    names = layered_modules()
    return {
        name: import_edges(name, path.read_text(), path.name == "__init__.py", set(names))
        for name, path in names.items()
    }


def floor(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else ""
    for level, keys in enumerate(LAYERS):
        if key in keys:
            return level
    raise AssertionError(
        f"{module}: '{key}' is on no floor of LAYERS (tests/test_import_graph.py); place it there "
        "and in docs/architecture.md"
    )


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(importer, imported) for every import of a module on a higher floor; of a module and the packages above it
    only the module is named."""
    found = set()
    for importer, targets in graph.items():
        named = {t for t in targets if not any(o.startswith(t + ".") for o in targets)}
        found.update((importer, t) for t in named if floor(t) > floor(importer))
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("name", sorted(module_names()))
def test_every_module_imports(name):
    importlib.import_module(name)


def test_no_import_cycle_counting_imports_inside_functions():
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle (imports inside functions count): {' -> '.join(cycle)}"


def test_every_module_sits_on_a_floor():
    for module in layered_modules():
        floor(module)


def test_no_import_runs_upward():
    found = upward_imports(import_graph())
    new = sorted(found - set(KNOWN_UPWARD))
    assert not new, "imports of a higher layer (LAYERS in this file, docs/architecture.md):\n" + "\n".join(
        f"  {a} -> {b}" for a, b in new
    )
    fixed = sorted(set(KNOWN_UPWARD) - found)
    assert not fixed, f"no longer upward, drop them from KNOWN_UPWARD: {fixed}"


def test_the_layer_check_sees_a_planted_upward_import_and_a_planted_cycle():
    """The checks can fail: an import of the study layer inside a models function is found, one under ``if
    TYPE_CHECKING`` is not, and two modules importing each other inside functions are a cycle."""
    planted = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ..viz import figures\n"
        "def load():\n    from ..analysis.runner import run_study\n    return run_study\n"
    )
    known = {
        "mapflow.models.planted",
        "mapflow.analysis",
        "mapflow.analysis.runner",
        "mapflow.viz",
        "mapflow.viz.figures",
        "mapflow.models",
    }
    graph = {"mapflow.models.planted": import_edges("mapflow.models.planted", planted, False, known)}
    assert graph["mapflow.models.planted"] == {"mapflow.analysis", "mapflow.analysis.runner"}
    assert upward_imports(graph) == {("mapflow.models.planted", "mapflow.analysis.runner")}
    twins = {"mapflow.results.a": "def f():\n    from .b import g\n", "mapflow.results.b": "from .a import f\n"}
    known = set(twins)
    cycle_graph = {name: import_edges(name, source, False, known) for name, source in twins.items()}
    assert find_cycle(cycle_graph) == ["mapflow.results.a", "mapflow.results.b", "mapflow.results.a"]
    assert not upward_imports(cycle_graph)


def is_folder(key: str) -> bool:
    return bool(key) and (PACKAGE / key).is_dir()


def test_the_architecture_diagram_draws_the_floors_in_the_order_of_layers():
    """docs/architecture.md's diagram names each layer's folder, top floor first, in the order of LAYERS."""
    text = (REPO / "docs" / "architecture.md").read_text()
    diagram = text.split("```")[1]
    drawn = {}
    for level, keys in enumerate(LAYERS):
        for key in keys:
            label = "studies/" if key == "studies" else f"mapflow/{key}/" if is_folder(key) else None
            if label and label in diagram:
                drawn[key] = (diagram.index(label), level)
    by_position = [level for _, level in sorted(drawn.values())]
    assert by_position == sorted(by_position, reverse=True), (
        f"the diagram's floors (top first) are out of LAYERS' order: {sorted(drawn, key=lambda k: drawn[k][0])}"
    )
    assert {k for keys in LAYERS for k in keys if is_folder(k) or k == "studies"} <= set(drawn), (
        "a layer folder is missing from the diagram"
    )


def test_the_ndif_client_never_imports_the_local_server_operator():
    """The client finds a running local server through its state file only, never through the operator."""
    graph = import_graph()

    def reaches(a, b):
        seen, todo = set(), [a]
        while todo:
            node = todo.pop()
            if node == b:
                return True
            if node not in seen:
                seen.add(node)
                todo.extend(graph.get(node, ()))
        return False

    assert not any(reaches(m, "mapflow.ndif_local.stack") for m in graph if m.startswith("mapflow.remote")), (
        "the NDIF client imports the local server operator"
    )


SERVER_SIDE = [
    "mapflow.knockout.cells",
    "mapflow.knockout.engine",
    "mapflow.knockout.planner",
    "mapflow.knockout.suffix_attention",
    "mapflow.knockout.flows",
    "mapflow.knockout.masks",
    "mapflow.models.attention_mask",
    "mapflow.inputs.layout",
    "mapflow.readouts.lens",
]


@pytest.mark.parametrize("name", SERVER_SIDE)
def test_code_that_runs_on_an_ndif_server_imports_mapflow_at_module_level(name):
    """A function shipped in a remote request runs without its module's package context: an import of mapflow
    inside it fails on the server (seen as KeyError "'__name__' not in globals"), so these modules import mapflow
    only at the top."""
    import importlib
    import inspect

    tree = ast.parse(inspect.getsource(importlib.import_module(name)))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom):
                    assert not inner.level and not (inner.module or "").startswith("mapflow"), (
                        f"{name}.{node.name} imports {'.' * inner.level}{inner.module} inside the function"
                    )

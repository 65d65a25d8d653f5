"""The package layout: every module imports, and module-level imports form no cycle (the layers stack)."""

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


def top_level_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports at module level (not inside functions or ``if TYPE_CHECKING``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()

    def resolve(module: str | None, level: int) -> str:
        if not level:
            return module or ""
        base = package.split(".")[: len(package.split(".")) - (level - 1)]
        return ".".join(base + ([module] if module else []))

    def visit(statements):
        for node in statements:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body + node.orelse + getattr(node, "finalbody", []) +
                      [s for h in getattr(node, "handlers", []) for s in h.body])
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                target = resolve(node.module, node.level)
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)

    visit(ast.parse(path.read_text()).body)
    edges = set()
    for target in found:
        # importing a.b.c runs a/__init__, a.b/__init__ and a.b.c
        parts = target.split(".")
        edges.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {t for t in edges & known if t != name and not name.startswith(t + ".")}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
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


def test_no_module_level_import_cycle():
    names = module_names()
    graph = {name: top_level_imports(name, path, set(names)) for name, path in names.items()}
    assert find_cycle(graph) is None, f"module-level import cycle: {' -> '.join(find_cycle(graph))}"


def test_no_function_level_import_closes_a_cycle():
    """The cycles the layout removed (cli <-> demo suite, video <-> frame cache, remote client <-> local stack) stay
    removed: counting imports inside functions too, these pairs do not reach each other both ways."""
    names = module_names()

    def all_imports(name, path):
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                out.update({target} | {f"{target}.{a.name}" for a in node.names})
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
        return out & set(names)

    graph = {name: all_imports(name, path) for name, path in names.items()}

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

    for a, b in [("mapflow.cli.commands", "mapflow.cli.demo"), ("mapflow.data.video", "mapflow.data.frame_cache"),
                 ("mapflow.remote.config", "mapflow.remote.client")]:
        assert not (reaches(a, b) and reaches(b, a)), f"{a} and {b} import each other"
    # the client finds a running local server through its state file only, never through the operator
    assert not any(reaches(m, "mapflow.ndif_local.stack") for m in names if m.startswith("mapflow.remote")), \
        "the NDIF client imports the local server operator"


def test_names_of_replaced_modules_still_import():
    """Paths that became packages keep the flat module's names (README examples use them)."""
    from mapflow.inputs import TEMPLATES, user_path
    from mapflow.inputs.checks import user_path as real_user_path
    from mapflow.inputs.prompts import TEMPLATES as REAL_TEMPLATES
    from mapflow.knockout import Flow, apply_knockout
    from mapflow.knockout.flows import Flow as RealFlow
    from mapflow.knockout.masks import apply_knockout as real_apply_knockout
    from mapflow.results import ResultStore, open_dataset
    from mapflow.results.store import ResultStore as RealResultStore
    from mapflow.results.store import open_dataset as real_open_dataset

    assert (TEMPLATES, user_path, Flow, apply_knockout, ResultStore, open_dataset) == (
        REAL_TEMPLATES, real_user_path, RealFlow, real_apply_knockout, RealResultStore, real_open_dataset)
    import mapflow.knockout

    with pytest.raises(AttributeError):
        mapflow.knockout.no_such_name  # noqa: B018


@pytest.mark.parametrize("old,new", sorted(__import__("mapflow._moved", fromlist=["MOVED"]).MOVED.items()))
def test_flat_module_paths_of_before_the_layers_are_the_moved_modules(old, new):
    """``from mapflow.flows import Flow`` (the README of 0.1) keeps working: the old path is the new module itself."""
    import importlib

    assert importlib.import_module(f"mapflow.{old}") is importlib.import_module(f"mapflow.{new}")


def test_an_unknown_old_path_is_still_an_import_error():
    with pytest.raises(ModuleNotFoundError):
        __import__("mapflow.no_such_module")


SERVER_SIDE = ["mapflow.knockout.cells", "mapflow.knockout.engine", "mapflow.knockout.planner",
               "mapflow.knockout.suffix_attention", "mapflow.knockout.flows", "mapflow.knockout.masks",
               "mapflow.inputs.layout", "mapflow.readouts.lens"]


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
                    assert not inner.level and not (inner.module or "").startswith("mapflow"), \
                        f"{name}.{node.name} imports {'.' * inner.level}{inner.module} inside the function"

"""Find what cannot run remotely before anything is sent.

nnsight ships each traced block as source, plus the values it reads; the server runs it and hands back only the values
saved into plain local variables. So a study cannot run remotely when its source cannot be read (code built with
``exec``), when it saves into a dict entry or attribute (that comes back empty), or when it registers behaviour in a
global registry (an attention function, a hook) that the server's process never sees.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from types import ModuleType

from .faults import NotRemotable

# Global registries that live in the client's process only.
_CLIENT_ONLY_CALLS = {
    "register_forward_hook",
    "register_forward_pre_hook",
    "register_full_backward_hook",
    "AttentionInterface",
    "register_attention_function",
}
_TRACE_METHODS = {"trace", "session", "generate", "scan", "edit"}


def check_study_remotable(study: ModuleType) -> None:
    """Raise `NotRemotable` naming the study file, line and reason; otherwise return quietly."""
    name = getattr(study, "__name__", str(study))
    try:
        source = inspect.getsource(study)
        path = inspect.getsourcefile(inspect.unwrap(study)) or name  # a function study wraps its function
    except (OSError, TypeError):
        raise NotRemotable(
            f"study {name} has no readable source file; nnsight ships a traced block as source, so "
            "write the study to a .py file"
        ) from None
    problems = [f"{path}:{line}: {reason}" for line, reason in _problems(ast.parse(textwrap.dedent(source)))]
    if problems:
        raise NotRemotable(f"study {name} cannot run remotely:\n  " + "\n  ".join(problems))


def _problems(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            called = _call_name(node.func)
            if called in ("exec", "eval", "compile"):
                yield node.lineno, f"{called}() builds code nnsight has no source for"
            elif called in _CLIENT_ONLY_CALLS:
                yield node.lineno, f"{called} changes the model in this process only; the server never sees it"
        elif isinstance(node, (ast.With, ast.AsyncWith)) and any(_is_trace(item.context_expr) for item in node.items):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Assign) and _saves(inner.value):
                    for target in inner.targets:
                        if isinstance(target, (ast.Subscript, ast.Attribute)):
                            yield (
                                inner.lineno,
                                (
                                    "a saved value is stored in a dict entry or attribute; a remote "
                                    "trace hands back only plain local variables"
                                ),
                            )


def _call_name(func: ast.AST) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _is_trace(expr: ast.AST) -> bool:
    return isinstance(expr, ast.Call) and _call_name(expr.func) in _TRACE_METHODS


def _saves(expr: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and _call_name(n.func) == "save" for n in ast.walk(expr))

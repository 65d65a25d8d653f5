"""Lazy re-exports for a layer package whose public names live in its submodules (PEP 562).

A package that replaced a flat module (``mapflow.knockout``, ``mapflow.results``, ``mapflow.inputs``) keeps the old
module's names importable from the package path; nothing is imported until a name is asked for, so importing the
package costs nothing and the re-exports close no import cycle.
"""

from __future__ import annotations

import importlib


def reexport(package: str, modules: tuple[str, ...]):
    """``__getattr__`` for ``package``: the first of its submodules ``modules`` that defines the name serves it."""

    def __getattr__(name: str):
        if not name.startswith("_"):
            for module in modules:
                found = importlib.import_module(f"{package}.{module}")
                if name in vars(found):
                    return vars(found)[name]
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__

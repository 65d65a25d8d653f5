"""The study catalog: the shipped studies by name (`mapflow.studies`), a study file by path, and which of them the
screen (`mapflow.knockout.screen`) may run."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from ..errors import KnockoutConfigError, MapflowError
from .declaration import declaration_of

STUDIES_PACKAGE = "mapflow.studies"  # the repository's studies/ folder (mapped in setup.py and __init__)


def load_study(name_or_path: str) -> ModuleType:
    """A study by name (``mapflow.studies.<name>``: the repository's ``studies/<name>.py``) or by the path of a
    ``.py`` file defining ``run(ctx)``."""
    path = Path(name_or_path)
    if path.suffix == ".py":
        if not path.is_file():
            raise MapflowError(f"study file {path} does not exist")
        spec = importlib.util.spec_from_file_location(f"mapflow_user_study_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # nnsight reads the traced block's source through the module
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(f"{STUDIES_PACKAGE}.{name_or_path}")
        except ModuleNotFoundError as err:
            if err.name != f"{STUDIES_PACKAGE}.{name_or_path}":
                raise
            raise MapflowError(
                f"no study named '{name_or_path}'; available: {', '.join(available_studies())}"
            ) from None
    if not callable(getattr(module, "run", None)):
        raise MapflowError(f"study {name_or_path} defines no run(ctx) function")
    declaration_of(module)  # checked on load: a study still defining the old globals is told what replaces them
    return module


def available_studies() -> list[str]:
    import pkgutil

    package = importlib.import_module(STUDIES_PACKAGE)
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))


def check_screenable(study, name: str, plan: str, remote: bool = False) -> None:
    """``--plan screen`` on a study without a differentiable knockout metric (generation, maps...), or remotely (the
    screen runs the local model's backward pass): a clear error."""
    if plan in ("auto", "naive"):
        return
    if remote:
        raise KnockoutConfigError(
            f"--plan {plan} runs locally only (it needs a backward pass of the local model); "
            "drop --remote or use --plan auto"
        )
    # screenable: the study's cells are knockout sweeps read at the last position (a differentiable metric)
    if declaration_of(study).screenable:
        return
    screenable = [s for s in available_studies() if declaration_of(load_study(s)).screenable]
    raise KnockoutConfigError(
        f"--plan {plan}: study '{name}' has no differentiable knockout metric to screen; "
        f"use --plan auto, or one of the screenable studies: {', '.join(screenable)}"
    )

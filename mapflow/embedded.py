"""The embedded default: model organisms and a benchmark shipped in ``data/`` so every command works offline."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import MapflowError


def _data_dir() -> Path:
    """The installed package data (``mapflow._data``, the wheel's copy of ``data/``), else the source checkout's
    ``data/`` folder next to the package."""
    shipped = resources.files(__package__) / "_data"
    if shipped.is_dir():
        if not isinstance(shipped, Path):  # checkpoints and videos are opened by path
            raise MapflowError(f"mapflow's data ({shipped}) is not on the file system; install mapflow unzipped")
        return shipped
    return Path(__file__).resolve().parent.parent / "data"


DATA_DIR = _data_dir()
ORGANISM_DIRS = {variant: DATA_DIR / "models" / f"organism-{variant}" for variant in ("video", "frames", "pathway")}
DEFAULT_MODEL_DIR = ORGANISM_DIRS["video"]
DEFAULT_DATA_DIR = DATA_DIR / "temporal-bench"
TINY_BENCH_DIR = DATA_DIR / "tvbench-mini"  # 64 px videos for models that resize (tests, `bench --shape`)


def organism_dir(variant: str = "video") -> Path:
    path = ORGANISM_DIRS[variant]
    if not (path / "config.json").is_file():
        raise MapflowError(
            f"the embedded model {path} is missing; retrain it with `mapflow organism train "
            f"--variant {variant} --out {path}` (see docs/organisms.md)"
        )
    return path


def default_model_dir() -> Path:
    return organism_dir("video")


def default_data_dir() -> Path:
    if not (DEFAULT_DATA_DIR / "json").is_dir():
        raise MapflowError(
            f"the embedded benchmark {DEFAULT_DATA_DIR} is missing; regenerate it with `python -m "
            f"mapflow.organism.synthetic {DEFAULT_DATA_DIR} --benchmark temporal --per-task 100 --seed 1234 "
            "--canonical-options`"
        )
    return DEFAULT_DATA_DIR

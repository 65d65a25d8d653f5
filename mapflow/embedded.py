"""The embedded default: a model and a benchmark shipped in ``data/`` so every command works offline on a CPU."""

from __future__ import annotations

from pathlib import Path

from .errors import MapflowError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEFAULT_MODEL_DIR = DATA_DIR / "models" / "tiny-llava-next-video"
DEFAULT_DATA_DIR = DATA_DIR / "tvbench-mini"
TINY_BENCH_DIR = DATA_DIR / "tvbench-mini"
DEFAULT_MODEL_SEED = 0


def default_model_dir() -> Path:
    """The shipped tiny LLaVA-NeXT-Video; rebuilt from its seed if the folder is missing."""
    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        from .models.tiny import build_tiny_llava_next_video

        build_tiny_llava_next_video(DEFAULT_MODEL_DIR, seed=DEFAULT_MODEL_SEED)
    return DEFAULT_MODEL_DIR


def default_data_dir() -> Path:
    if not (DEFAULT_DATA_DIR / "json").is_dir():
        raise MapflowError(f"the embedded benchmark {DEFAULT_DATA_DIR} is missing; regenerate it with "
                           f"`python -m mapflow.data.synthetic {DEFAULT_DATA_DIR}`")
    return DEFAULT_DATA_DIR

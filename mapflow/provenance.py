"""Where a result came from: model and weights hash, dataset, seed, config, library versions."""

from __future__ import annotations

import hashlib
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import mapflow

LIBRARIES = ("nnsight", "transformers", "torch", "xarray", "zarr", "numpy", "decord")
_FULL_HASH_LIMIT = 2 * 1024**3  # above this, hash file sizes plus head and tail blocks: minutes saved on 7B checkpoints
_BLOCK = 16 * 1024**2


def library_versions() -> dict[str, str]:
    versions = {"mapflow": mapflow.__version__, "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _weight_files(model_dir: Path) -> list[Path]:
    patterns = ("*.safetensors", "*.bin", "*.pt", "*.pth")
    return sorted({p for pattern in patterns for p in model_dir.glob(pattern) if p.is_file()})


def hash_files(files: list[Path], root: Path) -> tuple[str, str]:
    """sha256 over the files' relative names and bytes; (digest, method)."""
    total = sum(f.stat().st_size for f in files)
    full = total <= _FULL_HASH_LIMIT
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative_to(root)).encode())
        size = f.stat().st_size
        digest.update(size.to_bytes(8, "little"))
        with f.open("rb") as handle:
            if full or size <= 2 * _BLOCK:
                for block in iter(lambda: handle.read(_BLOCK), b""):
                    digest.update(block)
            else:
                digest.update(handle.read(_BLOCK))
                handle.seek(size - _BLOCK)
                digest.update(handle.read(_BLOCK))
    return digest.hexdigest(), "sha256" if full else "sha256(size+head+tail 16MiB)"


def model_provenance(model_dir) -> dict:
    model_dir = Path(model_dir).resolve()
    files = _weight_files(model_dir)
    digest, method = hash_files(files, model_dir) if files else ("", "no weight files")
    config = model_dir / "config.json"
    return {"path": str(model_dir), "name": model_dir.name, "weights_hash": digest, "hash_method": method,
            "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else ""}


def dataset_provenance(data_root, annotation_files) -> dict:
    data_root = Path(data_root).resolve()
    files = sorted(Path(f).resolve() for f in annotation_files)  # resolved like the root: relative_to must hold
    digest, _ = hash_files(files, data_root) if files else ("", "")
    return {"root": str(data_root), "annotations_sha256": digest,
            "annotation_files": [str(f.relative_to(data_root)) for f in files]}


def run_provenance(*, study: str, model_dir, data_root, annotation_files, seed: int, config: dict,
                   runtime: dict) -> dict:
    """Everything a reader needs to trust or redo a result. ``config`` is compared when a run resumes."""
    return {
        "study": study,
        "model": model_provenance(model_dir),
        "dataset": dataset_provenance(data_root, annotation_files),
        "seed": seed,
        "config": config,
        "runtime": runtime,
        "versions": library_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }

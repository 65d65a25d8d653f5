"""Where a result came from: model and weights hash, dataset, seed, config, library versions."""

from __future__ import annotations

import hashlib
import platform
from datetime import UTC, datetime
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


def hash_files_each(files: list[Path], root: Path) -> tuple[str, str, dict[str, str]]:
    """sha256 over the files' relative names and bytes, and each file's own digest (same bytes read once, so a resume
    can name the file that changed): (digest, method, {name: digest})."""
    total = sum(f.stat().st_size for f in files)
    full = total <= _FULL_HASH_LIMIT
    digest, each = hashlib.sha256(), {}
    for f in files:
        name = str(f.relative_to(root))
        own = hashlib.sha256()
        digest.update(name.encode())
        size = f.stat().st_size
        digest.update(size.to_bytes(8, "little"))
        own.update(size.to_bytes(8, "little"))
        with f.open("rb") as handle:
            if full or size <= 2 * _BLOCK:
                blocks = iter(lambda: handle.read(_BLOCK), b"")
            else:
                head = handle.read(_BLOCK)
                handle.seek(size - _BLOCK)
                blocks = iter((head, handle.read(_BLOCK)))
            for block in blocks:
                digest.update(block)
                own.update(block)
        each[name] = own.hexdigest()
    return digest.hexdigest(), "sha256" if full else "sha256(size+head+tail 16MiB)", each


def model_provenance(model_dir) -> dict:
    model_dir = Path(model_dir).resolve()
    files = _weight_files(model_dir)
    digest, method, each = hash_files_each(files, model_dir) if files else ("", "no weight files", {})
    config = model_dir / "config.json"
    return {
        "path": str(model_dir),
        "name": model_dir.name,
        "weights_hash": digest,
        "hash_method": method,
        "weights_files": each,
        "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else "",
    }


def dataset_provenance(data_root, annotation_files) -> dict:
    data_root = Path(data_root).resolve()
    files = sorted(Path(f).resolve() for f in annotation_files)  # resolved like the root: relative_to must hold
    digest, _, each = hash_files_each(files, data_root) if files else ("", "", {})
    return {
        "root": str(data_root),
        "annotations_sha256": digest,
        "annotation_files_sha256": each,
        "annotation_files": [str(f.relative_to(data_root)) for f in files],
    }


def run_provenance(
    *, study: str, model_dir, data_root, annotation_files, seed: int, config: dict, runtime: dict
) -> dict:
    """Everything a reader needs to trust or redo a result. ``config`` is compared when a run resumes."""
    return {
        "study": study,
        "model": model_provenance(model_dir),
        "dataset": dataset_provenance(data_root, annotation_files),
        "seed": seed,
        "config": config,
        "runtime": runtime,
        "versions": library_versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def input_changes(stored: dict, new: dict) -> list[str]:
    """What differs between the inputs (weights, model config, annotations) two provenances were measured on.

    A resume compares these besides the config: the same paths may now hold other files. Provenance written before
    per-file hashes existed still compares by the overall digest."""
    changes = []
    checks = [
        ("model", "weights_hash", "weights_files", "the model weights in {path}"),
        ("model", "config_sha256", None, "the model's config.json in {path}"),
        ("dataset", "annotations_sha256", "annotation_files_sha256", "the annotation files under {root}"),
    ]
    for section, key, files_key, what in checks:
        old, now = stored.get(section) or {}, new.get(section) or {}
        if key not in old or key not in now or old[key] == now[key]:
            continue
        detail = _changed_files(old.get(files_key), now.get(files_key)) if files_key else ""
        changes.append(
            what.format(path=now.get("path", "?"), root=now.get("root", "?")) + (f" ({detail})" if detail else "")
        )
    return changes


def _changed_files(old: dict | None, new: dict | None) -> str:
    if not isinstance(old, dict) or not isinstance(new, dict):
        return ""
    parts = [f"{name} changed" for name in sorted(set(old) & set(new)) if old[name] != new[name]]
    parts += [f"{name} added" for name in sorted(set(new) - set(old))]
    parts += [f"{name} removed" for name in sorted(set(old) - set(new))]
    return ", ".join(parts)

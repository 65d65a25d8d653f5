"""A run split into shards: the run directory, its shards' state, and merging them into one dataset.

Layout: ``RUN/shards/I-of-N.zarr`` is shard I (0-based) of N, a normal `ResultStore` with its own lock
(``RUN/shards/I-of-N.zarr.lock``), so N shards never contend and each resumes like any store. Each shard's
provenance has a ``shard`` section: its index and count, the run's ordered sample ids (``run_samples``) and
``run_sha256``, a hash of what every shard of the run must share (the configuration, the weights, the model's
``config.json``, the annotation files and the ordered sample list). A shard refuses to start next to a sibling with
another hash or count.

A run is complete when each of its N shard stores exists, no writer holds (or died holding) its lock, and each of
its samples is either stored or recorded as failed: a failed sample is missing from the results exactly as in a
single-process run (rerunning that shard retries it). `merge_run` refuses an incomplete run, naming the shards that
are missing, in flight, stale or stopped early, unless ``partial``; `open_run` is the same merge, lazily, in memory.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from ..errors import MapflowError
from .integrity import PROVENANCE_KEY, read_root_attrs
from .provenance import input_changes
from .store import _differing_keys

SHARDS_DIR = "shards"
SHARD_KEY = "shard"  # the section of a shard's provenance
MERGED_KEY = "shards"  # the section of a merged run's provenance
_SHARD_NAME = re.compile(r"^(\d+)-of-(\d+)\.zarr$")

# states of a shard in `run_status`
DONE, IN_FLIGHT, STALE, STOPPED, MISSING, DAMAGED = "done", "in flight", "stale", "stopped", "missing", "damaged"


def shard_store_path(run, index: int, count: int) -> Path:
    return Path(run) / SHARDS_DIR / f"{index}-of-{count}.zarr"


def is_run_dir(path) -> bool:
    """A directory of shards (not itself a store)."""
    path = Path(path)
    return (path / SHARDS_DIR).is_dir() and not (path / ".zgroup").exists()


def shard_stores(run) -> dict[tuple[int, int], Path]:
    """(index, count) -> store path, for every shard store in ``run``."""
    folder = Path(run) / SHARDS_DIR
    found = {}
    for child in sorted(folder.iterdir()) if folder.is_dir() else ():
        match = _SHARD_NAME.match(child.name)
        if match and child.is_dir():
            found[(int(match.group(1)), int(match.group(2)))] = child
    return found


def run_fingerprint(provenance: dict, run_samples: list[str]) -> str:
    """sha256 of what every shard of one run shares: config, input hashes, the ordered sample list."""
    model, dataset = provenance.get("model") or {}, provenance.get("dataset") or {}
    shared = {
        "config": provenance.get("config"),
        "weights_hash": model.get("weights_hash"),
        "model_config_sha256": model.get("config_sha256"),
        "annotations_sha256": dataset.get("annotations_sha256"),
        "run_samples": list(run_samples),
    }
    return hashlib.sha256(json.dumps(shared, sort_keys=True, default=str).encode()).hexdigest()


def shard_provenance(provenance: dict, index: int, count: int, run_samples: list[str]) -> dict:
    """``provenance`` with the shard's section: index, count, the run's sample list and its hash."""
    run_samples = [str(sample_id) for sample_id in run_samples]
    section = {
        "index": index,
        "count": count,
        "run_sha256": run_fingerprint(provenance, run_samples),
        "run_samples": run_samples,
    }
    return {**provenance, SHARD_KEY: section}


def prepare_shard_store(run, provenance: dict) -> Path:
    """The store a shard writes (its provenance made by `shard_provenance`), after checking ``run`` is a run
    directory whose other shards belong to the same run: same count, same configuration, inputs and samples."""
    run = Path(run)
    if (run / ".zgroup").exists():
        raise MapflowError(
            f"{run} is a result store, not a run directory: shards write into a directory of their own "
            "(choose another --out)"
        )
    section = provenance[SHARD_KEY]
    index, count = section["index"], section["count"]
    for (other_index, other_count), path in shard_stores(run).items():
        if other_index == index and other_count == count:
            continue  # this shard's own store: resuming it checks config and inputs itself
        if other_count != count:
            raise MapflowError(
                f"shard {index}/{count} refused: {run} already holds shard {other_index}/{other_count} ({path}); "
                f"a run has one shard count: rerun with --shard I/{other_count}, or choose another --out"
            )
        try:
            other = read_root_attrs(path)[PROVENANCE_KEY]
        except MapflowError:
            continue  # a sibling being created or damaged: `mapflow show` reports it; merge checks again
        differences = _run_differences(other, provenance)
        if differences:
            raise MapflowError(
                f"shard {index}/{count} refused: its sibling shard {other_index}/{other_count} in {run} was made "
                f"with another {'; '.join(differences)}; all shards of a run share one configuration and inputs "
                "(rerun with the sibling's settings, or choose another --out)"
            )
    return shard_store_path(run, index, count)


def _run_differences(stored: dict, new: dict) -> list[str]:
    """What differs between two shards' runs, named: config keys, changed input files, the sample list."""
    if stored.get(SHARD_KEY, {}).get("run_sha256") == new.get(SHARD_KEY, {}).get("run_sha256"):
        return []
    found = [
        f"configuration (differs in: {', '.join(keys)})"
        for keys in [_differing_keys(stored.get("config"), new.get("config"))]
        if keys
    ]
    found += [f"input: {change}" for change in input_changes(stored, new)]
    old_samples = stored.get(SHARD_KEY, {}).get("run_samples") or []
    new_samples = new.get(SHARD_KEY, {}).get("run_samples") or []
    if old_samples != new_samples:
        first = next(
            (i for i, (a, b) in enumerate(zip(old_samples, new_samples, strict=False)) if a != b),
            min(len(old_samples), len(new_samples)),
        )
        found.append(
            f"sample list ({len(old_samples)} vs {len(new_samples)} samples, first difference at position {first})"
        )
    return found or ["run hash"]

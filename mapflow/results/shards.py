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
import socket
from dataclasses import dataclass, field
from pathlib import Path

import xarray as xr

from ..errors import MapflowError
from .integrity import COMMITTED_KEY, COMPLETE_CHUNKS_KEY, FAILURES_KEY, PROVENANCE_KEY, SAMPLE_DIM, read_root_attrs
from .provenance import input_changes
from .store import RESERVED_ATTRS, SAMPLE_CHUNK, ResultStore, differing_keys, open_dataset
from .store_lock import alive_here, describe_holder, lock_path, read_holder

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
        for keys in [differing_keys(stored.get("config"), new.get("config"))]
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


@dataclass
class ShardState:
    """One shard of a run as `run_status` finds it."""

    index: int
    count: int
    path: Path
    state: str  # DONE, IN_FLIGHT, STALE, STOPPED, MISSING or DAMAGED
    assigned: int | None = None  # samples of the run that are this shard's
    committed: int = 0
    failed: dict = field(default_factory=dict)  # sample id -> {"task", "reason"}
    detail: str = ""

    def describe(self) -> str:
        counts = "" if self.assigned is None else f" {self.committed}/{self.assigned} samples stored"
        failed = f", {len(self.failed)} failed" if self.failed else ""
        detail = f" ({self.detail})" if self.detail else ""
        return f"shard {self.index}/{self.count}  {self.state:9s}{counts}{failed}{detail}"


@dataclass
class RunStatus:
    run: Path
    count: int
    shards: list[ShardState]

    @property
    def incomplete(self) -> list[ShardState]:
        return [shard for shard in self.shards if shard.state != DONE]

    def describe(self) -> str:
        lines = [f"{self.run}: {self.count} shard(s)"] + ["  " + shard.describe() for shard in self.shards]
        failed = sum(len(shard.failed) for shard in self.shards)
        if self.incomplete:
            lines.append(
                "incomplete: " + ", ".join(f"shard {s.index} {s.state}" for s in self.incomplete) + " (run the "
                "missing, stale or stopped shards again with the same command; they resume)"
            )
        else:
            lines.append(f"complete ({failed} failed sample(s)); `mapflow merge {self.run}` joins the shards")
        return "\n".join(lines)


def run_status(run) -> RunStatus:
    """Each shard of ``run``: done, in flight (a live writer holds its lock), stale (its writer died holding the
    lock), stopped (no writer, samples left), missing (never started) or damaged (unreadable bookkeeping)."""
    run = Path(run)
    stores = shard_stores(run)
    counts = sorted({count for _, count in stores})
    if not counts:
        raise MapflowError(f"{run} holds no shards (expected {run / SHARDS_DIR}/I-of-N.zarr)")
    if len(counts) > 1:
        raise MapflowError(f"{run} mixes shard counts {counts}: a run has one; remove the stray shards")
    count = counts[0]
    return RunStatus(
        run, count, [_shard_state(run, index, count, stores.get((index, count))) for index in range(count)]
    )


def _shard_state(run: Path, index: int, count: int, path: Path | None) -> ShardState:
    if path is None:
        return ShardState(index, count, shard_store_path(run, index, count), MISSING)
    holder = _lock_holder(path)
    try:
        attrs = read_root_attrs(path)
        section = attrs[PROVENANCE_KEY].get(SHARD_KEY) or {}
        assigned = set(section.get("run_samples", [])[index::count])
        store = ResultStore(path)
        stored, failed = store.completed_sample_ids(), store.failed_samples()
    except MapflowError as err:
        if holder is not None and holder[0] == IN_FLIGHT:  # a writer creating or repairing it
            return ShardState(index, count, path, IN_FLIGHT, detail=holder[1])
        return ShardState(index, count, path, DAMAGED, detail=str(err))
    state = ShardState(index, count, path, DONE, len(assigned), len(stored & assigned), failed)
    if holder is not None:
        state.state, state.detail = holder
    elif assigned - stored - set(failed):
        state.state = STOPPED
        state.detail = f"{len(assigned - stored - set(failed))} sample(s) left"
    return state


def _lock_holder(store: Path) -> tuple[str, str] | None:
    """(IN_FLIGHT or STALE, who) from the store's lock file, or None when no writer holds it (read only)."""
    holder = read_holder(store)
    if holder is None:
        return None
    if not isinstance(holder.get("pid"), int):
        return IN_FLIGHT, f"lock {lock_path(store)} of a writer that is starting"
    who = describe_holder(holder)
    if holder.get("host") != socket.gethostname():
        return IN_FLIGHT, f"lock held by {who}; another host: not checked from here"
    if not alive_here(holder):
        return STALE, f"its writer {who} is gone; rerunning the shard takes the lock over and resumes"
    return IN_FLIGHT, who


def open_run(run, *, partial: bool = False) -> xr.Dataset:
    """The shards of ``run`` as one dataset (lazy), in the run's sample order: what a single process would have
    stored. Refuses an incomplete run (naming its shards) unless ``partial``: then the committed samples of every
    shard that can be read."""
    status = run_status(run)
    if status.incomplete and not partial:
        raise MapflowError(_incomplete_message(status))
    readable = [shard for shard in status.shards if shard.state not in (MISSING, DAMAGED)]
    provenances = {shard.index: read_root_attrs(shard.path)[PROVENANCE_KEY] for shard in readable}
    _check_one_run(status, provenances)
    parts = [open_dataset(shard.path) for shard in readable]
    parts = [part for part in parts if part.sizes.get(SAMPLE_DIM, 0)]
    failures = {}
    for shard in readable:
        failures.update(shard.failed)
    if parts:
        merged = xr.concat(
            [part.drop_attrs() for part in parts],
            dim=SAMPLE_DIM,
            data_vars="minimal",
            coords="minimal",
            compat="equals",
            join="exact",
            combine_attrs="drop",
        )
        merged = merged.isel({SAMPLE_DIM: _run_order(merged, provenances)})
    else:
        merged = xr.Dataset()
    # the study's own attrs (the same in every shard, as every sample's result carries them), then the bookkeeping
    study_attrs = {key: value for key, value in (parts[0].attrs if parts else {}).items() if key not in RESERVED_ATTRS}
    merged.attrs = {
        **study_attrs,
        PROVENANCE_KEY: _merged_provenance(status, provenances, partial=bool(status.incomplete)),
        COMMITTED_KEY: int(merged.sizes.get(SAMPLE_DIM, 0)),
        FAILURES_KEY: failures,
        COMPLETE_CHUNKS_KEY: True,
    }
    return merged


def merge_run(run, out=None, *, partial: bool = False, overwrite: bool = False):
    """`open_run`, written to the store ``out`` when given (a normal `ResultStore`: locked while written, verified
    like any store; an existing one is refused unless ``overwrite``). Returns the dataset, or the store path."""
    merged = open_run(run, partial=partial)
    if out is None:
        return merged
    provenance = merged.attrs[PROVENANCE_KEY]
    with ResultStore.create_or_resume(out, provenance, resume=False, overwrite=overwrite) as store:
        data = merged.copy()
        data.attrs = {key: value for key, value in merged.attrs.items() if key not in RESERVED_ATTRS}
        total = data.sizes.get(SAMPLE_DIM, 0)
        for start in range(0, total, SAMPLE_CHUNK):  # one store chunk per commit: memory stays one chunk
            store.append(data.isel({SAMPLE_DIM: slice(start, start + SAMPLE_CHUNK)}).load())
        for sample_id, info in merged.attrs[FAILURES_KEY].items():
            store.record_failure(sample_id, info["task"], info["reason"])
    return Path(out)


def _incomplete_message(status: RunStatus) -> str:
    parts = []
    for state in (MISSING, IN_FLIGHT, STALE, STOPPED, DAMAGED):
        indices = [str(shard.index) for shard in status.incomplete if shard.state == state]
        if indices:
            parts.append(f"{state}: shard(s) {', '.join(indices)}")
    return (
        f"{status.run} is incomplete ({status.count} shards; {'; '.join(parts)}): run those shards (a stale or "
        "stopped one resumes with the same command), wait for those in flight, or merge what is there with --partial"
    )


def _check_one_run(status: RunStatus, provenances: dict[int, dict]) -> None:
    """Every shard read was made for one run (a sibling check at start cannot see a shard started at the same
    moment)."""
    first_index = min(provenances, default=None)
    for index, provenance in provenances.items():
        differences = _run_differences(provenances[first_index], provenance)
        if differences:
            raise MapflowError(
                f"{status.run}: shard {index}/{status.count} and shard {first_index}/{status.count} belong to "
                f"different runs ({'; '.join(differences)}); rerun one of them with the other's settings"
            )


def _run_order(merged: xr.Dataset, provenances: dict[int, dict]) -> list[int]:
    """Positions that put the concatenated samples in the run's order (`run_samples`)."""
    run_samples = next(iter(provenances.values()))[SHARD_KEY]["run_samples"]
    position = {str(sample_id): i for i, sample_id in enumerate(merged[SAMPLE_DIM].values)}
    order = [position[sample_id] for sample_id in run_samples if sample_id in position]
    listed = set(run_samples)
    return order + [i for sample_id, i in position.items() if sample_id not in listed]


def _merged_provenance(status: RunStatus, provenances: dict[int, dict], *, partial: bool) -> dict:
    """The shards' shared provenance (the first shard's, without its shard section) plus a ``shards`` section:
    count, run hash, whether partial, and each shard's own record (created, runtime, counts)."""
    if not provenances:
        return {MERGED_KEY: {"count": status.count, "partial": True, "members": []}}
    first = provenances[min(provenances)]
    section = first[SHARD_KEY]
    members = []
    for shard in status.shards:
        own = provenances.get(shard.index, {})
        members.append(
            {
                "index": shard.index,
                "state": shard.state,
                "stored": shard.committed,
                "failed": len(shard.failed),
                "created": own.get("created"),
                "runtime": own.get("runtime"),
            }
        )
    merged = {key: value for key, value in first.items() if key != SHARD_KEY}
    merged[MERGED_KEY] = {
        "count": status.count,
        "run_sha256": section["run_sha256"],
        "run_samples": section["run_samples"],
        "partial": partial,
        "members": members,
    }
    return merged

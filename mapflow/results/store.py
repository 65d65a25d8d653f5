"""Per-sample study results appended to one zarr store, safe to kill and resume.

Layout: a zarr (format 2) directory store holding one xarray Dataset with a
leading ``sample`` dimension. Root attributes hold the run's ``provenance``,
the committed sample count and the failed samples.

Crash safety
------------
Every file zarr writes to a local store is written to a temporary file and
renamed into place, so each single file write is atomic under SIGKILL. An
append then takes three steps:

1. xarray appends the sample to every array (unconsolidated). Arrays are
   resized and written one after another, so a kill here leaves arrays of
   different lengths. (xarray also rewrites the root attrs here; it is handed
   the current ones, so they still describe the previous commit.)
2. The root attributes get the new committed count (and lose the sample from
   the failures) in one atomic write of ``.zattrs``. This is the commit.
3. The metadata is consolidated into ``.zmetadata`` (one atomic write).

``xarray.open_zarr`` reads the consolidated metadata by default, so it only
ever sees array shapes from a finished append: a direct reader gets a
consistent dataset even while a writer is killed in steps 1 or 2 (after a kill
between steps 2 and 3 it lags one sample behind the commit until the next open).
`open_dataset` always gives exactly the committed samples: where the
consolidated copy of the count differs from the commit it reads the arrays' own
metadata (the data is written before the count) and cuts them to the count.

A full disk: each write fails whole (temporary file + rename), so the store is
left at the last commit or, when the disk filled in step 3, at the new one with
a stale ``.zmetadata``; that file is then deleted (which needs no space), so
plain xarray readers read the arrays' own metadata and see the committed count
too. The error says that count, which sample was or was not stored, and the
free space; opening for writing on a still-full disk says the same in one line.
Opening the store for writing (``create_or_resume``) repairs it to exactly the
committed samples: every array with a ``sample`` dimension is shrunk to the
committed count (zarr drops the chunks past the end), leftover temporary files
are removed and the metadata is consolidated again. A failed append in a live
process (an exception, Ctrl-C) runs the same repair before re-raising.

Readers never write: ``ResultStore(path)`` and `open_dataset` only read, so they
are safe while a run appends and on a read-only disk. A writer holds the
store's lock (`mapflow.results.store_lock`) from opening to `close`; a second writer is
refused. Opening for writing also checks every metadata file and every committed
sample (`mapflow.results.integrity`): it drops damaged samples, so the run
measures them again, rebuilds damaged store metadata, and sets a committed count
that claims more samples than the arrays hold to the samples they hold.
Every chunk is written, even an all-fill one, so a missing chunk is damage.

Zarr format 2 because it
stores variable-length strings (object dtype, VLenUTF8) and consolidated
metadata without warnings; format 3 warns that consolidated metadata is not in
its spec, and without consolidation the atomic reader snapshot above is lost.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from ..errors import MapflowError
from .disk_full import disk_full_says_so, free_space, is_disk_full, readers_follow_the_count
from .integrity import (
    COMMITTED_KEY,
    COMPLETE_CHUNKS_KEY,
    FAILURES_KEY,
    PROVENANCE_KEY,
    SAMPLE_DIM,
    Report,
    StoreDamaged,
    consolidated_count,
    group_file_problem,
    inspect_store,
    read_root_attrs,
    restore_array_metadata,
    restore_root_attrs,
    rewrite_group_file,
)
from .store_lock import StoreLock

log = logging.getLogger(__name__)

ZARR_FORMAT = 2  # v2: variable-length strings and consolidated metadata without warnings
SAMPLE_CHUNK = 64  # samples per chunk file; keeps the file count low for long runs

RESERVED_ATTRS = (PROVENANCE_KEY, COMMITTED_KEY, FAILURES_KEY, COMPLETE_CHUNKS_KEY)

_WRITERS: ContextVar[list | None] = ContextVar("mapflow_open_writers", default=None)

# zarr's local store writes "<name>.<32 hex>.partial" and renames it; a kill can leave one behind.
_PARTIAL_FILE = re.compile(r"\.[0-9a-f]{32}\.partial$")


@contextmanager
def writers_opened():
    """Collect the stores opened for writing inside the block (so a caller can close them however it ends)."""
    opened: list[ResultStore] = []
    token = _WRITERS.set(opened)
    try:
        yield opened
    finally:
        _WRITERS.reset(token)


class ResultStore:
    """One zarr directory store of per-sample results.

    ``ResultStore(path)`` opens it read-only; `create_or_resume` (or `open_for_writing`) opens it for writing: it takes
    the store's lock, repairs and verifies it. Close a writer (or use it as a context manager) to release the lock.
    """

    def __init__(self, path: str | os.PathLike, *, _lock: StoreLock | None = None) -> None:
        self.path = Path(path)
        read_root_attrs(self.path)  # a clear error for a directory that is no (intact) result store
        self._lock = _lock
        if _lock is not None and _WRITERS.get() is not None:
            _WRITERS.get().append(self)
        self._completed_ids: set[str] | None = None  # read on first use; only a writer changes them
        self.verify_report: Report | None = None  # what opening for writing found (and repaired)

    @classmethod
    def create_or_resume(
        cls,
        path: str | os.PathLike,
        provenance: dict,
        *,
        resume: bool = True,
        overwrite: bool = False,
    ) -> ResultStore:
        """Create a new store, or reopen (verify and repair) an existing one measured with the same config and inputs.

        overwrite=True deletes an existing store first; resume=False refuses an existing one.
        """
        path = Path(path)
        provenance = _json_safe(provenance)
        with disk_full_says_so(path):
            return cls._create_or_resume(path, provenance, resume, overwrite)

    @classmethod
    def _create_or_resume(cls, path: Path, provenance: dict, resume: bool, overwrite: bool) -> ResultStore:
        for _ in range(2):  # a second pass when another writer created the store under us
            if path.exists() and not _is_empty_dir(path):
                if overwrite:
                    _remove_store(path)
                    overwrite = False
                elif not resume:
                    raise MapflowError(f"{path} already exists; choose another --out or pass --overwrite to replace it")
                else:
                    return cls._open_writer(path, provenance)
            lock = _create_store(path, provenance)
            if lock is not None:
                return cls(path, _lock=lock)
        raise MapflowError(f"{path} changed while it was being created; is another run writing to it?")

    @classmethod
    def open_for_writing(cls, path: str | os.PathLike) -> ResultStore:
        """Lock, repair and verify an existing store (dropping damaged samples, rebuilding damaged store metadata),
        whatever its config."""
        with disk_full_says_so(Path(path)):
            return cls._open_writer(Path(path), None)

    @classmethod
    def _open_writer(cls, path: Path, provenance: dict | None) -> ResultStore:
        try:
            read_root_attrs(path)  # refuse a non-store before taking its lock
        except StoreDamaged:
            pass  # a zarr group with damaged root attributes: restored below, under the lock, where possible
        lock = StoreLock.acquire(path)
        fixed: list[str] = []  # what was rebuilt before the samples are checked
        try:
            # a resume refuses a damaged .zgroup (one line naming it); `mapflow verify --repair` rewrites it
            attrs = _read_or_restore_root_attrs(path, rewrite_group=provenance is None, fixed=fixed)
            if provenance is not None:
                stored = attrs[PROVENANCE_KEY]
                _check_same_config(path, stored.get("config"), provenance.get("config"))
                _check_same_inputs(path, stored, provenance)
            store = cls(path, _lock=lock)
            store.verify_report = store._repair_for_writing(fixed)
        except BaseException:
            lock.release()
            raise
        return store

    def close(self) -> None:
        """Release a writer's lock (a reader has none). The store stays as committed."""
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def provenance(self) -> dict:
        return self._attrs()[PROVENANCE_KEY]

    @property
    def committed_count(self) -> int:
        return int(self._attrs()[COMMITTED_KEY])

    def completed_sample_ids(self) -> set[str]:
        if self._completed_ids is None:
            self._completed_ids = self._read_sample_ids()
        return set(self._completed_ids)

    def failed_samples(self) -> dict[str, dict]:
        """sample id -> {"task": ..., "reason": ...} for samples recorded as failed."""
        return dict(self._attrs()[FAILURES_KEY])

    def record_failure(self, sample_id: str, task: str, reason: str) -> None:
        sample_id = str(sample_id)
        self._require_writer()
        if sample_id in self.completed_sample_ids():
            raise MapflowError(f"sample {sample_id} is already stored in {self.path}; cannot mark it failed")
        failures = self.failed_samples()
        failures[sample_id] = {"task": str(task), "reason": str(reason)}
        try:
            self._commit_attrs({FAILURES_KEY: failures})
        except OSError as err:
            if not is_disk_full(err):
                raise
            recorded = sample_id in self.failed_samples()
            raise self._disk_full(
                f"the failure of sample {sample_id} was {'' if recorded else 'not '}recorded"
            ) from err

    def append(self, sample_ds: xr.Dataset) -> None:
        """Append one study result (leading `sample` dim) and commit it."""
        self._require_writer()
        ds = _prepare_for_store(sample_ds)
        new_ids = [str(sample_id) for sample_id in ds[SAMPLE_DIM].values]
        duplicates = sorted(set(new_ids) & self.completed_sample_ids())
        if duplicates:
            raise MapflowError(f"sample(s) {', '.join(duplicates)} already stored in {self.path}")
        count = self.committed_count
        if count > 0:
            _check_matches_store(ds, self.open_dataset(), self.path)
        # xarray replaces the root attrs on every write: hand it the current ones so the
        # bookkeeping survives (and stays at the old commit) while arrays are written.
        ds.attrs = {**ds.attrs, **self._attrs()}
        try:
            # data first, the count after: readers only ever see samples whose data is complete
            _write_arrays(ds, self.path, first=count == 0)
            failures = {k: v for k, v in self.failed_samples().items() if k not in new_ids}
            self._commit_attrs({COMMITTED_KEY: count + len(new_ids), FAILURES_KEY: failures})
        except BaseException as err:
            try:
                self._repair()  # drop the half-written sample so this object stays usable
            except Exception as repair_error:  # e.g. the disk is still full: the next open for writing repairs it
                (log.debug if is_disk_full(repair_error) else log.warning)(  # a full disk: the error below says it
                    "%s: could not roll back the unfinished append yet (%s)", self.path, repair_error
                )
            self._completed_ids = self._read_sample_ids()  # the count may have landed before the failure
            if is_disk_full(err):
                stored = set(new_ids) <= self._completed_ids
                raise self._disk_full(f"sample {', '.join(new_ids)} was {'' if stored else 'not '}stored") from err
            raise
        self._completed_ids = self.completed_sample_ids() | set(new_ids)

    def _disk_full(self, what_happened: str) -> MapflowError:
        """The disk filled up while this writer wrote: make every reader see the committed count, and say it."""
        kept = readers_follow_the_count(self.path)
        return MapflowError(
            f"disk full while writing to {self.path} ({free_space(self.path)} free there): {kept} "
            f"committed sample(s) kept, which is what every reader sees; {what_happened}; free some "
            "space and rerun the same command to resume"
        )

    def open_dataset(self) -> xr.Dataset:
        return open_dataset(self.path)

    def _require_writer(self) -> None:
        if self._lock is None or not self._lock.held:
            raise MapflowError(
                f"{self.path} is open read-only (or closed); open it with ResultStore.create_or_resume to write"
            )

    def _group(self, mode: str = "r+") -> zarr.Group:
        # Never the consolidated view: writers need the arrays' real shapes.
        return zarr.open_group(self.path, mode=mode, zarr_format=ZARR_FORMAT, use_consolidated=False)

    def _read_sample_ids(self) -> set[str]:
        count = self.committed_count
        if count == 0:
            return set()
        return {str(sample_id) for sample_id in self._group("r")[SAMPLE_DIM][:count]}

    def _attrs(self) -> dict:
        return read_root_attrs(self.path)

    def _commit_attrs(self, updates: dict) -> None:
        """Update root attrs in one atomic write, then publish the shapes to readers."""
        if updates:
            self._group().attrs.update(updates)
        zarr.consolidate_metadata(self.path, zarr_format=ZARR_FORMAT)

    def _repair_for_writing(self, fixed: list[str]) -> Report:
        """The tail repair, or, where committed samples are damaged, dropping those (they are measured again).
        A count above the data is set to the samples the arrays hold; damaged store metadata is rebuilt."""
        _remove_partial_files(self.path)
        fixed += restore_array_metadata(self.path)
        report = inspect_store(self.path)
        if report.count_problem:
            self._group().attrs.update({COMMITTED_KEY: report.rows})
            fixed.append(
                f"committed count corrected from {report.committed} to {report.rows} (the samples the "
                "arrays hold); no sample was lost"
            )
            report = inspect_store(self.path)
        if report.damaged:
            self._drop_rows(report)
            report.repaired = [report.label(row) for row in sorted(report.damaged)]
        else:
            self._repair()  # this consolidates the metadata again, rebuilding a damaged .zmetadata
        report.fixed = fixed + [f"rebuilt {file}" for file in report.metadata]
        report.metadata = {}
        if report.repaired or report.fixed:
            log.warning("%s", report.describe())
        self._completed_ids = self._read_sample_ids()
        return report

    def _drop_rows(self, report: Report) -> None:
        """Drop the damaged committed samples; the good ones after the first damaged one are re-appended in order.

        Every step leaves a valid store: the commit count drops first (the good tail is held in memory), so a kill
        here loses at most the tail, which the run then measures again."""
        count, damaged = report.committed, set(report.damaged)
        first = min(damaged)
        keep = [row for row in range(first, count) if row not in damaged]
        tail = None
        if keep:  # then every array's metadata is readable (otherwise all rows are damaged)
            for broken in report.unreadable_files:
                broken.unlink(missing_ok=True)  # so the lazy read below cannot trip over them
            self._resize_sample_arrays(count)
            tail = open_dataset(self.path).isel({SAMPLE_DIM: keep}).load()
            tail.attrs = {}
        self._group().attrs.update({COMMITTED_KEY: first})  # the commit; then the arrays follow
        self._repair()
        self._completed_ids = self._read_sample_ids()
        if tail is not None:
            self.append(tail)

    def _resize_sample_arrays(self, count: int) -> None:
        """Every sample-dim array to exactly `count` samples (missing ones read as fill), then republish."""
        for _, array in self._group().arrays():
            dims = list(array.attrs.get("_ARRAY_DIMENSIONS", []))
            if SAMPLE_DIM in dims and array.shape[dims.index(SAMPLE_DIM)] != count:
                axis = dims.index(SAMPLE_DIM)
                array.resize(array.shape[:axis] + (count,) + array.shape[axis + 1 :])
        self._commit_attrs({})

    def _repair(self) -> None:
        """Cut every sample-dim array back to the committed count (see module docstring)."""
        _remove_partial_files(self.path)
        count = self.committed_count
        if count == 0:  # an interrupted first append (or nothing worth keeping): start from an empty group
            for child in self.path.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
            self._commit_attrs({})
            return
        group = self._group()
        for name, array in list(group.arrays()):
            dims = list(array.attrs.get("_ARRAY_DIMENSIONS", []))
            if SAMPLE_DIM not in dims:
                continue
            axis = dims.index(SAMPLE_DIM)
            length = array.shape[axis]
            if length < count:
                raise MapflowError(
                    f"{self.path}: array '{name}' has {length} samples but {count} are committed; the store is corrupt"
                )
            if length > count:
                array.resize(array.shape[:axis] + (count,) + array.shape[axis + 1 :])
        self._commit_attrs({})


def open_dataset(path: str | os.PathLike) -> xr.Dataset:
    """Lazily open a result store (read-only): exactly its committed samples.

    That is what plain `xarray.open_zarr(path)` gives too, except in the moment between a writer's commit and its
    consolidation (or after a disk filled up there), when the consolidated metadata is one commit behind: then the
    arrays' own metadata is read (the data is always written before the count) and cut to the committed count.

    The arrays are xarray's lazily indexed numpy arrays whether or not dask is installed (``chunks=None``): with dask
    present ``open_zarr`` would otherwise give dask arrays, and the same figure code would behave differently
    (boolean indexing of a dask array is refused); ``ds.chunk()`` turns them into dask arrays on purpose."""
    path = Path(path)
    count = read_root_attrs(path)[COMMITTED_KEY]  # zarr would fail on garbage with a bare JSONDecodeError
    consolidated = consolidated_count(path)
    if consolidated == count:
        return xr.open_zarr(path, consolidated=True, chunks=None)
    if isinstance(consolidated, int) and consolidated > count:  # a writer dropping damaged samples: the prefix holds
        return xr.open_zarr(path, consolidated=True, chunks=None).isel({SAMPLE_DIM: slice(0, count)})
    try:
        ds = xr.open_zarr(path, consolidated=False, chunks=None)
    except ValueError as err:  # e.g. arrays of different sample lengths
        raise StoreDamaged(
            f"{path}: the arrays cannot be opened together ({err}); run `mapflow verify {path}`"
        ) from None
    present = ds.sizes.get(SAMPLE_DIM, 0)
    if present < count:
        raise StoreDamaged(
            f"{path / '.zattrs'} says {count} committed samples but the arrays hold {present}; "
            f"`mapflow verify {path} --repair` sets the count to {present}",
            path / ".zattrs",
        )
    return ds.isel({SAMPLE_DIM: slice(0, count)}) if SAMPLE_DIM in ds.dims else ds


def _read_or_restore_root_attrs(path: Path, *, rewrite_group: bool, fixed: list[str]) -> dict:
    """The root attributes for a writer: a damaged ``.zattrs`` restored from the consolidated copy, a damaged
    ``.zgroup`` rewritten where `rewrite_group` (else refused, naming it)."""
    problem = group_file_problem(path)
    if problem is not None:
        if not rewrite_group:
            raise StoreDamaged(f"{problem}; `mapflow verify {path} --repair` rewrites it", problem.file)
        rewrite_group_file(path)
        fixed.append(f"rebuilt {problem.file}")
    try:
        return read_root_attrs(path)
    except StoreDamaged as damage:
        attrs = restore_root_attrs(path, damage)
        log.warning("%s: restored the damaged root attributes (.zattrs) from the consolidated metadata", path)
        fixed.append(f"restored {path / '.zattrs'} from the consolidated metadata")
        return attrs


def _create_store(path: Path, provenance: dict) -> StoreLock | None:
    """A new store, locked by this process; None when another writer created `path` first."""
    lock = StoreLock.acquire(path)
    try:
        if path.exists() and not _is_empty_dir(path):
            lock.release()
            return None  # another writer was quicker: resume (or be refused by) its store
        # Build next to the target and rename, so a kill never leaves a half-created store.
        staging = path.with_name(f"{path.name}.creating-{uuid.uuid4().hex}")
        try:
            group = zarr.open_group(staging, mode="w-", zarr_format=ZARR_FORMAT)
            group.attrs.update(
                {PROVENANCE_KEY: provenance, COMMITTED_KEY: 0, FAILURES_KEY: {}, COMPLETE_CHUNKS_KEY: True}
            )
            zarr.consolidate_metadata(staging, zarr_format=ZARR_FORMAT)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # (on a full disk this frees the space it took)
            raise
        os.rename(staging, path)
    except BaseException:
        lock.release()
        raise
    return lock


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _remove_store(path: Path) -> None:
    if not (path / ".zgroup").is_file():
        raise MapflowError(f"refusing to overwrite {path}: it is not a zarr store")
    lock = StoreLock.acquire(path)  # never delete a store another run is writing
    try:
        # Rename first so a kill during the delete cannot leave a half-deleted store at `path`.
        doomed = path.with_name(f"{path.name}.deleting-{uuid.uuid4().hex}")
        os.rename(path, doomed)
    finally:
        lock.release()
    shutil.rmtree(doomed)


def _remove_partial_files(path: Path) -> None:
    for leftover in path.rglob("*.partial"):
        if _PARTIAL_FILE.search(leftover.name):
            leftover.unlink(missing_ok=True)  # zarr may be removing it itself


def _check_same_inputs(path: Path, stored: dict, new: dict) -> None:
    from .provenance import input_changes

    changes = input_changes(stored, new)
    if changes:
        raise MapflowError(
            f"{path} was measured on other inputs; changed since: {'; '.join(changes)}. Resuming would mix results "
            "of different inputs: restore the original files, choose another --out, or pass --overwrite to start over"
        )


def _json_safe(value: Any) -> Any:
    def fallback(obj: Any) -> Any:
        return obj.item() if isinstance(obj, np.generic) else str(obj)

    return json.loads(json.dumps(value, default=fallback))


def _check_same_config(path: Path, stored: Any, new: Any) -> None:
    differing = differing_keys(stored, new)
    if differing:
        raise MapflowError(
            f"{path} was written with a different config (differs in: {', '.join(differing)}); "
            "choose another --out or pass --overwrite to start over"
        )


def differing_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the entries that differ between two JSON-like values."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for key in keys for d in differing_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".") or "config"]


def _prepare_for_store(sample_ds: xr.Dataset) -> xr.Dataset:
    if SAMPLE_DIM not in sample_ds.dims or SAMPLE_DIM not in sample_ds.coords:
        raise MapflowError(f"a result must have a '{SAMPLE_DIM}' dimension with sample-id coordinate")
    ids = [str(sample_id) for sample_id in sample_ds[SAMPLE_DIM].values]
    if not ids:
        raise MapflowError("a result with no samples cannot be appended")
    if len(set(ids)) != len(ids):
        raise MapflowError(f"duplicate sample ids within one result: {ids}")
    reserved = sorted(set(sample_ds.attrs) & set(RESERVED_ATTRS))
    if reserved:
        raise MapflowError(f"result attrs use names reserved by the store: {reserved}")
    # Object dtype makes zarr store variable-length strings; fixed-width '<U5' would
    # refuse a longer string in a later append.
    strings = {name: var.astype(object) for name, var in sample_ds.variables.items() if var.dtype.kind in "UT"}
    ds = sample_ds.drop_encoding().assign_coords({SAMPLE_DIM: np.array(ids, dtype=object)})
    ds = ds.assign_coords({n: v for n, v in strings.items() if n in ds.coords and n != SAMPLE_DIM})
    return ds.assign({n: v for n, v in strings.items() if n not in ds.coords})


def _write_arrays(ds: xr.Dataset, path: Path, *, first: bool) -> None:
    if first:
        chunking = {
            name: {"chunks": tuple(SAMPLE_CHUNK if d == SAMPLE_DIM else size for d, size in zip(var.dims, var.shape))}
            for name, var in ds.variables.items()
            if SAMPLE_DIM in var.dims
        }
        ds.to_zarr(
            path, mode="a", encoding=chunking, consolidated=False, zarr_format=ZARR_FORMAT, write_empty_chunks=True
        )
    else:
        # "a-": leave the shared (sample-free) variables alone; they were checked equal.
        ds.to_zarr(
            path, mode="a-", append_dim=SAMPLE_DIM, consolidated=False, zarr_format=ZARR_FORMAT, write_empty_chunks=True
        )


def _check_matches_store(new: xr.Dataset, stored: xr.Dataset, path: Path) -> None:
    problems = _dim_differences(new, stored)
    for name in sorted(set(new.variables) | set(stored.variables)):
        if name not in stored.variables:
            problems.append(f"'{name}' is not in the store")
        elif name not in new.variables:
            problems.append(f"'{name}' is missing from the new result")
        elif (name in new.coords) != (name in stored.coords):
            problems.append(f"'{name}' is a coordinate in only one of store and result")
        elif not problems:  # per-variable detail only when the dims agree, to keep it readable
            problems += _variable_differences(name, new[name].variable, stored[name].variable)
    if problems:
        raise MapflowError(f"result does not match the store {path}: " + "; ".join(problems))


def _dim_differences(new: xr.Dataset, stored: xr.Dataset) -> list[str]:
    sizes_new = {d: s for d, s in new.sizes.items() if d != SAMPLE_DIM}
    sizes_stored = {d: s for d, s in stored.sizes.items() if d != SAMPLE_DIM}
    if sizes_new == sizes_stored:
        return []
    return [f"non-sample dims are {sizes_new}, store has {sizes_stored}"]


def _variable_differences(name: str, new: xr.Variable, stored: xr.Variable) -> list[str]:
    if new.dims != stored.dims:
        return [f"'{name}' has dims {new.dims}, store has {stored.dims}"]
    if _dtype_family(new.dtype) != _dtype_family(stored.dtype):
        return [f"'{name}' has dtype {new.dtype}, store has {stored.dtype}"]
    # Values without a sample dim are shared by all samples; xarray would silently overwrite them.
    if SAMPLE_DIM not in new.dims and not _same_values(new.values, stored.values):
        return [f"'{name}' has values {new.values.tolist()}, store has {stored.values.tolist()}"]
    return []


def _dtype_family(dtype: np.dtype) -> str:
    return "str" if dtype.kind in "UTO" else dtype.str


def _same_values(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.kind in "UTO" or b.dtype.kind in "UTO":
        return a.shape == b.shape and np.asarray(a, dtype=object).tolist() == np.asarray(b, dtype=object).tolist()
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


def verify_store(path, *, repair: bool = False) -> Report:
    """Check a store (read-only); with ``repair`` drop its damaged samples (taking the writer's lock)."""
    if not repair:
        return inspect_store(path)
    store = ResultStore.open_for_writing(path)
    store.close()
    return store.verify_report

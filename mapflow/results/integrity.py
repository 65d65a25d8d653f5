"""`mapflow verify`: is every committed sample of a result store present once and readable?

`inspect_store` only reads. It checks the store's own files directly (JSON metadata, chunk files) rather than
through zarr, because zarr hides exactly the damage that matters: a missing chunk reads back as its fill value
(all-NaN, '' ids), and garbage metadata surfaces as a raw decoder error. Damage is reported per committed sample
(row): a bad chunk damages the samples it holds, a bad array without a ``sample`` dim (a shared coordinate, or an
array whose dims cannot be read) damages all of them. `verify_store(repair=True)` drops the damaged samples through
the writer (`ResultStore.open_for_writing`), so rerunning the same ``mapflow run`` command measures only those again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from ..errors import MapflowError

# Keep in step with mapflow.results.store (imported lazily there; these names are the on-disk format).
SAMPLE_DIM = "sample"
PROVENANCE_KEY = "provenance"
COMMITTED_KEY = "mapflow_committed_samples"
FAILURES_KEY = "mapflow_failures"
COMPLETE_CHUNKS_KEY = "mapflow_every_chunk_written"  # stores that write all-fill chunks too: missing = deleted


class StoreDamaged(MapflowError):
    """A store whose bookkeeping cannot be read, so no sample can be trusted or repaired."""


def read_json_file(path: Path, what: str) -> dict:
    """A zarr metadata file as a dict, or a `StoreDamaged` naming the file."""
    try:
        value = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise StoreDamaged(f"{path} is missing ({what})") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise StoreDamaged(f"{path} is damaged ({what} is not valid JSON: {err})") from None
    if not isinstance(value, dict):
        raise StoreDamaged(f"{path} is damaged ({what} is not a JSON object)")
    return value


def read_root_attrs(path: Path) -> dict:
    """The store's root attributes; a clear error when the directory is no store or they are damaged."""
    path = Path(path)
    if not (path / ".zgroup").is_file():
        raise MapflowError(f"{path} is not a zarr result store (no .zgroup there)")
    try:
        attrs = read_json_file(path / ".zattrs", "the store's root attributes")
    except StoreDamaged as err:
        raise StoreDamaged(f"{err}; `mapflow verify {path} --repair` restores them from the consolidated metadata "
                           "where it can") from None
    if PROVENANCE_KEY not in attrs or COMMITTED_KEY not in attrs:
        raise MapflowError(f"{path} is a zarr store but not a mapflow result store")
    committed = attrs[COMMITTED_KEY]
    if not isinstance(committed, int) or committed < 0 or not isinstance(attrs.get(FAILURES_KEY, {}), dict):
        raise StoreDamaged(f"{path / '.zattrs'} is damaged ('{COMMITTED_KEY}' = {committed!r})")
    return attrs


def restore_root_attrs(path: Path, damage: StoreDamaged) -> dict:
    """Rewrite a damaged root ``.zattrs`` from its copy in the consolidated metadata (writers only).

    That copy is at most one commit behind, so the arrays' extra sample is dropped by the tail repair and measured
    again. Raises `damage` when there is no usable copy."""
    try:
        copy = read_json_file(path / ".zmetadata", "the consolidated metadata")["metadata"][".zattrs"]
    except (StoreDamaged, KeyError, TypeError):
        raise damage from None
    if not isinstance(copy, dict) or not isinstance(copy.get(COMMITTED_KEY), int) or PROVENANCE_KEY not in copy:
        raise damage
    staging = path / f".zattrs.{os.getpid()}.restoring"
    staging.write_text(json.dumps(copy, indent=4))
    os.replace(staging, path / ".zattrs")
    return read_root_attrs(path)


@dataclass
class Report:
    path: Path
    committed: int = 0
    arrays: int = 0
    chunks: int = 0
    damaged: dict[int, list[str]] = field(default_factory=dict)  # row -> reasons
    ids: dict[int, str] = field(default_factory=dict)  # row -> sample id, where readable
    notes: list[str] = field(default_factory=list)  # repairable by the ordinary writer repair, no sample lost
    repaired: list[str] = field(default_factory=list)  # what a repair dropped (ids or row labels)
    unreadable_files: list[Path] = field(default_factory=list)  # chunk files that exist but do not decode

    @property
    def ok(self) -> bool:
        return not self.damaged

    def damage(self, rows, reason: str) -> None:
        for row in rows:
            self.damaged.setdefault(int(row), []).append(reason)

    def label(self, row: int) -> str:
        return self.ids.get(row) or f"row {row} (sample id unreadable)"

    def describe(self) -> str:
        lines = [f"{self.path}: {self.committed} committed sample(s), {self.arrays} arrays, {self.chunks} chunks "
                 "checked"]
        lines += [f"  note: {note}" for note in self.notes]
        if self.repaired:
            lines.append(f"repaired: dropped {len(self.repaired)} damaged sample(s); rerun the same `mapflow run` "
                         "command to measure them again:")
            lines += [f"  {label}" for label in self.repaired[:20]]
        elif self.damaged:
            lines.append(f"DAMAGED: {len(self.damaged)} sample(s):")
            for row in sorted(self.damaged)[:20]:
                lines.append(f"  {self.label(row)}: {'; '.join(self.damaged[row][:3])}")
            lines.append(f"run `mapflow verify {self.path} --repair` (or rerun the same `mapflow run` command) to drop "
                         "them; the run then measures only those again")
        if len(self.damaged) > 20 or len(self.repaired) > 20:
            lines.append("  ...")
        if not self.damaged:
            lines.append("ok: every committed sample is present once and readable")
        return "\n".join(lines)


def inspect_store(path) -> Report:
    """Read-only check of every committed sample; raises `StoreDamaged` only when the root bookkeeping is lost."""
    path = Path(path)
    attrs = read_root_attrs(path)
    report = Report(path=path, committed=attrs[COMMITTED_KEY])
    rows = range(report.committed)
    try:
        read_json_file(path / ".zmetadata", "the consolidated metadata")
    except StoreDamaged as err:
        report.notes.append(f"{err}; a repair rebuilds it")
    complete = bool(attrs.get(COMPLETE_CHUNKS_KEY))
    for array_dir in sorted(p for p in path.iterdir() if p.is_dir()):
        report.arrays += 1
        try:
            meta = read_json_file(array_dir / ".zarray", "array metadata")
            dims = read_json_file(array_dir / ".zattrs", "array attributes").get("_ARRAY_DIMENSIONS")
            shape, chunks = list(meta["shape"]), list(meta["chunks"])
            if not isinstance(dims, list) or len(dims) != len(shape):
                raise StoreDamaged(f"{array_dir / '.zattrs'} has dims {dims!r} for shape {shape}")
        except (StoreDamaged, KeyError, TypeError) as err:
            report.damage(rows, f"array '{array_dir.name}' unreadable ({err})")
            continue
        _inspect_chunks(report, array_dir, meta, dims, shape, chunks, complete)
    committed_ids = set(report.ids.values())
    overlap = sorted(committed_ids & set(attrs.get(FAILURES_KEY, {})))
    if overlap:
        report.notes.append(f"samples both stored and listed as failed: {', '.join(overlap[:5])}")
    return report


def _inspect_chunks(report: Report, array_dir: Path, meta: dict, dims: list, shape: list, chunks: list,
                    complete: bool) -> None:
    name, committed = array_dir.name, report.committed
    axis = dims.index(SAMPLE_DIM) if SAMPLE_DIM in dims else None
    rows_of = (lambda index: range(index[axis] * chunks[axis], min((index[axis] + 1) * chunks[axis], committed))) \
        if axis is not None else (lambda index: range(committed))
    if axis is not None:
        if shape[axis] < committed:
            report.damage(range(shape[axis], committed), f"array '{name}' holds only {shape[axis]} samples")
        elif shape[axis] > committed:
            report.notes.append(f"array '{name}' has {shape[axis] - committed} uncommitted sample(s) from an "
                                "interrupted append; a repair drops them")
        shape = shape[:axis] + [min(shape[axis], committed)] + shape[axis + 1:]
    separator = meta.get("dimension_separator") or "."
    array = None
    for index in np.ndindex(*[-(-size // chunk) for size, chunk in zip(shape, chunks)]):
        report.chunks += 1
        key = separator.join(map(str, index)) if index else "0"
        where = f"chunk {name}/{key}"
        if not (array_dir / key).is_file():
            if complete or name == SAMPLE_DIM:  # ids are never all-fill
                report.damage(rows_of(index), f"{where} is missing")
            continue  # older stores skip all-fill chunks: a missing one cannot be told from an empty one
        try:
            array = array if array is not None else zarr.open_array(array_dir, mode="r", zarr_format=2)
            block = array.get_block_selection(index) if index else array[...]
        except Exception as err:  # any decoder error means the same: these samples cannot be read
            report.damage(rows_of(index), f"{where} unreadable ({type(err).__name__}: {err})")
            report.unreadable_files.append(array_dir / key)
            continue
        if name == SAMPLE_DIM:
            _check_ids(report, index[0] * chunks[0], block)


def _check_ids(report: Report, start: int, block: np.ndarray) -> None:
    first_row = {row_id: row for row, row_id in report.ids.items()}
    for offset, value in enumerate(block.tolist()):
        row = start + offset
        if row >= report.committed:
            break
        if not isinstance(value, str) or not value:
            report.damage([row], "no sample id")
            continue
        report.ids[row] = value
        if value in first_row:
            report.damage([row], f"duplicate of row {first_row[value]}")
        else:
            first_row[value] = row


def verify_store(path, *, repair: bool = False) -> Report:
    """Check a store (read-only); with ``repair`` drop its damaged samples (taking the writer's lock)."""
    if not repair:
        return inspect_store(path)
    from .store import ResultStore

    store = ResultStore.open_for_writing(path)
    store.close()
    return store.verify_report

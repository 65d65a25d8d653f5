"""`mapflow verify`: is every committed sample of a result store present once and readable?

`inspect_store` only reads. It checks every metadata file (``.zgroup``, the root ``.zattrs`` and its bookkeeping
keys, ``.zmetadata``, each array's ``.zarray`` and ``.zattrs``), the committed count against the sample length the
arrays actually hold (a count above it is one wrong number, not that many damaged samples), and every chunk file.
It reads the store's own files directly rather than through zarr, because zarr hides exactly the damage that
matters: a missing chunk reads back as its fill value (all-NaN, '' ids), and garbage metadata surfaces as a raw
decoder error. Damage is reported per committed sample
(row): a bad chunk damages the samples it holds, a bad array without a ``sample`` dim (a shared coordinate, or an
array whose dims cannot be read) damages all of them. `mapflow.results.store.verify_store(repair=True)` drops the
damaged samples through the writer (`ResultStore.open_for_writing`), so rerunning the same ``mapflow run`` command
measures only those again.
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

    def __init__(self, message: str, file: Path | None = None) -> None:
        super().__init__(message)
        self.file = file  # the damaged metadata file, where one is to blame


def read_json_file(path: Path, what: str) -> dict:
    """A zarr metadata file as a dict, or a `StoreDamaged` naming the file."""
    try:
        value = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise StoreDamaged(f"{path} is missing ({what})", path) from None
    except (ValueError, UnicodeDecodeError) as err:
        raise StoreDamaged(f"{path} is damaged ({what} is not valid JSON: {err})", path) from None
    if not isinstance(value, dict):
        raise StoreDamaged(f"{path} is damaged ({what} is not a JSON object)", path)
    return value


GROUP_FILE_CONTENT = {"zarr_format": 2}  # all a zarr v2 group's .zgroup holds, so a writer can rewrite it


def group_file_problem(path: Path) -> StoreDamaged | None:
    """What is wrong with the store's ``.zgroup`` (zarr reads it first and fails on garbage with a bare decoder
    error), or None."""
    try:
        group = read_json_file(path / ".zgroup", "the store's group metadata")
    except StoreDamaged as err:
        return err
    if group.get("zarr_format") != 2:
        return StoreDamaged(
            f"{path / '.zgroup'} is damaged (zarr_format {group.get('zarr_format')!r}, expected 2)", path / ".zgroup"
        )
    return None


def read_root_attrs(path: Path, *, check_group: bool = True) -> dict:
    """The store's root attributes; a clear error when the directory is no store or they are damaged."""
    path = Path(path)
    if not (path / ".zgroup").is_file():
        raise MapflowError(f"{path} is not a zarr result store (no .zgroup there)")
    problem = group_file_problem(path) if check_group else None
    if problem is not None:
        raise StoreDamaged(f"{problem}; `mapflow verify {path} --repair` rewrites it", problem.file)
    zattrs = path / ".zattrs"
    restore = f"; `mapflow verify {path} --repair` restores them from the consolidated metadata where it can"
    try:
        attrs = read_json_file(zattrs, "the store's root attributes")
    except StoreDamaged as err:
        raise StoreDamaged(f"{err}{restore}", zattrs) from None
    if PROVENANCE_KEY not in attrs or COMMITTED_KEY not in attrs:
        raise MapflowError(f"{path} is a zarr store but not a mapflow result store")
    problem = _bookkeeping_problem(attrs)
    if problem:
        raise StoreDamaged(f"{zattrs} is damaged ({problem}){restore}", zattrs)
    return attrs


def _bookkeeping_problem(attrs: dict) -> str | None:
    """Which bookkeeping key of the root attributes holds what cannot be right, or None."""
    committed = attrs[COMMITTED_KEY]
    if not isinstance(committed, int) or isinstance(committed, bool) or committed < 0:
        return f"'{COMMITTED_KEY}' = {_short(committed)}, not a sample count"
    failures = attrs.get(FAILURES_KEY, {})
    if not isinstance(failures, dict):
        return f"'{FAILURES_KEY}' = {_short(failures)}, not a mapping of sample id to its task and reason"
    for sample_id, info in failures.items():
        if not (isinstance(info, dict) and isinstance(info.get("task"), str) and isinstance(info.get("reason"), str)):
            return f"'{FAILURES_KEY}' entry '{sample_id}' = {_short(info)}, not {{'task': ..., 'reason': ...}}"
    return None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def consolidated_count(path: Path) -> int | None:
    """The committed count in the consolidated metadata's copy of the root attributes (None: there is none)."""
    if not (path / ".zmetadata").exists():
        return None
    try:
        consolidated = read_json_file(path / ".zmetadata", "the consolidated metadata")
        return consolidated["metadata"][".zattrs"][COMMITTED_KEY]
    except StoreDamaged as err:
        raise StoreDamaged(f"{err}; `mapflow verify {path} --repair` rebuilds it", err.file) from None
    except (KeyError, TypeError):
        raise StoreDamaged(
            f"{path / '.zmetadata'} is damaged (no copy of the root attributes); `mapflow verify "
            f"{path} --repair` rebuilds it",
            path / ".zmetadata",
        ) from None


def restore_root_attrs(path: Path, damage: StoreDamaged) -> dict:
    """Rewrite a damaged root ``.zattrs`` from its copy in the consolidated metadata (writers only).

    That copy is at most one commit behind, so the arrays' extra sample is dropped by the tail repair and measured
    again. Raises `damage` when there is no usable copy."""
    try:
        copy = read_json_file(path / ".zmetadata", "the consolidated metadata")["metadata"][".zattrs"]
    except (StoreDamaged, KeyError, TypeError):
        raise damage from None
    if (
        not isinstance(copy, dict)
        or COMMITTED_KEY not in copy
        or PROVENANCE_KEY not in copy
        or _bookkeeping_problem(copy)
    ):
        raise damage
    _replace_file(path / ".zattrs", copy)
    return read_root_attrs(path)


def restore_array_metadata(path: Path) -> list[str]:
    """Rewrite each array's damaged ``.zarray`` / ``.zattrs`` from its copy in the consolidated metadata (writers
    only), so one garbage metadata file does not cost every sample. The copy's shape may be one commit behind: the
    samples past it are then dropped and measured again. Returns what was restored."""
    try:
        entries = read_json_file(path / ".zmetadata", "the consolidated metadata")["metadata"]
    except (StoreDamaged, KeyError):
        return []
    if not isinstance(entries, dict):
        return []
    restored = []
    for array_dir in sorted(p for p in path.iterdir() if p.is_dir()):
        for name in (".zarray", ".zattrs"):
            copy = entries.get(f"{array_dir.name}/{name}")
            if not isinstance(copy, dict):
                continue
            try:
                read_json_file(array_dir / name, "array metadata")
            except StoreDamaged:
                _replace_file(array_dir / name, copy)
                restored.append(f"restored {array_dir / name} from the consolidated metadata")
    return restored


def rewrite_group_file(path: Path) -> None:
    """Rewrite a damaged ``.zgroup`` (writers only): its whole content is the zarr format."""
    _replace_file(path / ".zgroup", GROUP_FILE_CONTENT)


def _replace_file(target: Path, content: dict) -> None:
    staging = target.with_name(f"{target.name}.{os.getpid()}.restoring")
    staging.write_text(json.dumps(content, indent=4))
    os.replace(staging, target)


@dataclass
class Report:
    path: Path
    committed: int = 0  # the count the root attributes claim
    rows: int = 0  # the committed samples that exist in the data (the count, or fewer when the count is wrong)
    arrays: int = 0
    chunks: int = 0
    damaged: dict[int, list[str]] = field(default_factory=dict)  # row -> reasons
    ids: dict[int, str] = field(default_factory=dict)  # row -> sample id, where readable
    metadata: dict[Path, str] = field(default_factory=dict)  # damaged store-level metadata file -> what is wrong
    count_problem: str | None = None  # the committed count claims samples that no array holds
    notes: list[str] = field(default_factory=list)  # repairable by the ordinary writer repair, no sample lost
    repaired: list[str] = field(default_factory=list)  # what a repair dropped (ids or row labels)
    fixed: list[str] = field(default_factory=list)  # what a repair rebuilt or corrected, no sample lost
    unreadable_files: list[Path] = field(default_factory=list)  # chunk files that exist but do not decode

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.metadata and self.count_problem is None

    def damage(self, rows, reason: str) -> None:
        for row in rows:
            self.damaged.setdefault(int(row), []).append(reason)

    def label(self, row: int) -> str:
        return self.ids.get(row) or f"row {row} (sample id unreadable)"

    def describe(self) -> str:
        lines = [
            f"{self.path}: {self.committed} committed sample(s), {self.arrays} arrays, {self.chunks} chunks checked"
        ]
        lines += [f"  note: {note}" for note in self.notes]
        lines += [f"repaired: {fix}" for fix in self.fixed]
        repair = f"run `mapflow verify {self.path} --repair` (or rerun the same `mapflow run` command)"
        lines += [f"DAMAGED: {problem}" for problem in self.metadata.values()]
        if self.count_problem:
            lines.append(f"WRONG COUNT: {self.count_problem}")
        if (self.metadata or self.count_problem) and not self.damaged:
            lines.append(f"{repair} to repair it; no committed sample is lost")
        if self.repaired:
            lines.append(
                f"repaired: dropped {len(self.repaired)} damaged sample(s); rerun the same `mapflow run` "
                "command to measure them again:"
            )
            lines += [f"  {label}" for label in self.repaired[:20]]
        elif self.damaged:
            lines.append(f"DAMAGED: {len(self.damaged)} sample(s):")
            for row in sorted(self.damaged)[:20]:
                lines.append(f"  {self.label(row)}: {'; '.join(self.damaged[row][:3])}")
            lines.append(f"{repair} to drop them; the run then measures only those again")
        if len(self.damaged) > 20 or len(self.repaired) > 20:
            lines.append("  ...")
        if self.ok:
            lines.append("ok: every committed sample is present once and readable")
        return "\n".join(lines)


def inspect_store(path) -> Report:
    """Read-only check of every metadata file and every committed sample; raises `StoreDamaged` only when the root
    attributes (the bookkeeping) cannot be read."""
    path = Path(path)
    attrs = read_root_attrs(path, check_group=False)
    report = Report(path=path, committed=attrs[COMMITTED_KEY])
    group_problem = group_file_problem(path)
    if group_problem is not None:
        report.metadata[path / ".zgroup"] = f"{group_problem}; a repair rewrites it"
    arrays = []  # (array_dir, meta, dims, shape, chunks) of the arrays whose metadata reads
    unreadable = {}  # array name -> why its metadata does not read
    for array_dir in sorted(p for p in path.iterdir() if p.is_dir()):
        report.arrays += 1
        try:
            meta = read_json_file(array_dir / ".zarray", "array metadata")
            dims = read_json_file(array_dir / ".zattrs", "array attributes").get("_ARRAY_DIMENSIONS")
            shape, chunks = list(meta["shape"]), list(meta["chunks"])
            if not isinstance(dims, list) or len(dims) != len(shape):
                raise StoreDamaged(f"{array_dir / '.zattrs'} has dims {dims!r} for shape {shape}")
        except (StoreDamaged, KeyError, TypeError) as err:
            unreadable[array_dir.name] = str(err)
            continue
        arrays.append((array_dir, meta, dims, shape, chunks))
    _check_count_against_data(report, arrays)
    rows = range(report.rows)
    for name, reason in unreadable.items():
        report.damage(rows, f"array '{name}' unreadable ({reason})")
    complete = bool(attrs.get(COMPLETE_CHUNKS_KEY))
    for array_dir, meta, dims, shape, chunks in arrays:
        _inspect_chunks(report, array_dir, meta, dims, shape, chunks, complete)
    _check_consolidated(report, attrs, {p.name for p, *_ in arrays} | set(unreadable))
    committed_ids = set(report.ids.values())
    overlap = sorted(committed_ids & set(attrs.get(FAILURES_KEY, {})))
    if overlap:
        report.notes.append(f"samples both stored and listed as failed: {', '.join(overlap[:5])}")
    return report


def _check_count_against_data(report: Report, arrays: list) -> None:
    """A committed count above every array's sample length claims samples that were never written (the count was
    edited or damaged): that is one wrong number, not that many damaged samples."""
    lengths = [shape[dims.index(SAMPLE_DIM)] for _, _, dims, shape, _ in arrays if SAMPLE_DIM in dims]
    present = max(lengths, default=0)
    report.rows = min(report.committed, present)
    if report.committed > present:
        report.count_problem = (
            f"{report.path / '.zattrs'} says {report.committed} committed samples but the arrays "
            f"hold {present}; a repair sets the count to {present}"
        )


def _check_consolidated(report: Report, attrs: dict, array_names: set[str]) -> None:
    """``.zmetadata`` is what plain `xarray.open_zarr` reads: garbage there breaks every such reader (damage); a copy
    one commit behind (a writer between its commit and its consolidation) or none at all only makes them lag or
    read slower (a note: mapflow's readers follow the committed count)."""
    consolidated_path = report.path / ".zmetadata"
    if not consolidated_path.exists():
        report.notes.append(f"{consolidated_path} is missing: readers open the arrays directly; a repair rebuilds it")
        return
    try:
        entries = read_json_file(consolidated_path, "the consolidated metadata").get("metadata")
        if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
            raise StoreDamaged(f"{consolidated_path} is damaged (no metadata object of JSON objects)")
    except StoreDamaged as err:
        report.metadata[consolidated_path] = f"{err}; a repair rebuilds it"
        return
    copy = entries.get(".zattrs", {}).get(COMMITTED_KEY)
    if copy != attrs[COMMITTED_KEY]:
        if report.count_problem:
            return  # the count itself is wrong: that is the finding
        report.notes.append(
            f"the consolidated metadata shows {copy} sample(s) while {attrs[COMMITTED_KEY]} are "
            "committed: plain xarray.open_zarr readers lag until the writer consolidates (or a repair "
            "does); mapflow's readers see the committed samples"
        )
        return
    listed = {key.split("/")[0] for key in entries if key.endswith("/.zarray")}
    if report.committed and listed != array_names:  # (before the first commit the arrays are still being written)
        missing, extra = sorted(array_names - listed), sorted(listed - array_names)
        report.metadata[consolidated_path] = (
            f"{consolidated_path} is damaged (it lists other arrays than the store "
            f"holds: missing {missing}, extra {extra}); a repair rebuilds it"
        )


def _inspect_chunks(
    report: Report, array_dir: Path, meta: dict, dims: list, shape: list, chunks: list, complete: bool
) -> None:
    name, committed = array_dir.name, report.rows
    axis = dims.index(SAMPLE_DIM) if SAMPLE_DIM in dims else None
    rows_of = (
        (lambda index: range(index[axis] * chunks[axis], min((index[axis] + 1) * chunks[axis], committed)))
        if axis is not None
        else (lambda index: range(committed))
    )
    if axis is not None:
        if shape[axis] < committed:
            report.damage(range(shape[axis], committed), f"array '{name}' holds only {shape[axis]} samples")
        elif shape[axis] > committed:
            report.notes.append(
                f"array '{name}' has {shape[axis] - committed} uncommitted sample(s) from an "
                "interrupted append; a repair drops them"
            )
        shape = shape[:axis] + [min(shape[axis], committed)] + shape[axis + 1 :]
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
        if row >= report.rows:
            break
        if not isinstance(value, str) or not value:
            report.damage([row], "no sample id")
            continue
        report.ids[row] = value
        if value in first_row:
            report.damage([row], f"duplicate of row {first_row[value]}")
        else:
            first_row[value] = row

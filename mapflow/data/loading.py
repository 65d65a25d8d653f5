"""Pieces shared by the benchmark loaders: reading JSON, checking entry fields, task selection.

Every check raises a `DataError` located like TVBench's: ``where`` is the dict
``{"file": path, "sample": "<id> (entry <n>)"}`` and the failing field is named.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .sample import Sample
from ..errors import DataError

Where = dict[str, Any]


class JsonObject(dict):
    """A JSON object that remembers keys it saw twice (`json` silently keeps only the last one)."""

    def __init__(self, pairs: list[tuple[str, Any]]):
        super().__init__(pairs)
        seen: set[str] = set()
        self.duplicate_keys: list[str] = []
        for key, _ in pairs:
            if key in seen and key not in self.duplicate_keys:
                self.duplicate_keys.append(key)
            seen.add(key)


# --- bad entries: fail fast, or collect them all ------------------------------------------


@dataclass(frozen=True)
class BadEntry:
    """An annotation entry that failed validation, kept so a run can record it as a failed sample.

    It has a sample's `sample_id`, `task` and `source`, so seeded subsets (`limit`) and task selection treat it like
    the sample it would have been: the same entries are drawn whether or not some are bad.
    """

    sample_id: str
    task: str
    source: str
    error: DataError

    @property
    def reason(self) -> str:
        return str(self.error)


_collected: ContextVar[list[BadEntry] | None] = ContextVar("mapflow_bad_entries", default=None)


@contextmanager
def collecting_bad_entries() -> Iterator[list[BadEntry]]:
    """Inside this block the loaders go on past a bad entry: it lands in the yielded list (if the task and limit
    select it) instead of raising. Outside, the first bad entry raises its `DataError` (fail fast)."""
    found: list[BadEntry] = []
    token = _collected.set(found)
    try:
        yield found
    finally:
        _collected.reset(token)


def parse_entry(parse: Callable[[], Any], sample_id: str, task: str, source: str) -> Any:
    """``parse()``, or while collecting a `BadEntry` in place of the `DataError` it raised."""
    try:
        return parse()
    except DataError as err:
        if _collected.get() is None:
            raise
        return BadEntry(sample_id, task, source, err)


def fallback_id(entry: Any, task_field: str, id_field: str, index: int) -> tuple[str, str]:
    """(sample id, task) of an entry of a one-file benchmark, read leniently so a bad entry still gets a name:
    ``{task}/{id or index}``, with the task ``unknown`` when the entry does not state a usable one."""
    get = entry.get if isinstance(entry, dict) else (lambda _: None)
    task = get(task_field) if isinstance(get(task_field), str) and get(task_field).strip() else "unknown"
    native = get(id_field) if isinstance(get(id_field), str) and get(id_field).strip() else f"{index:04d}"
    return f"{task}/{native}", task


def keep_good(items: Iterable[Any]) -> list[Any]:
    """The parsed items that are not `BadEntry`s; those go to the active collection."""
    good = []
    for item in items:
        if isinstance(item, BadEntry):
            _collected.get().append(item)
        else:
            good.append(item)
    return good


# --- layout -----------------------------------------------------------------------------


def check_root(root: str | Path, benchmark: str) -> Path:
    root = Path(root)
    if not root.exists():
        raise DataError(f"{benchmark} root directory does not exist: {root}", file=root)
    if not root.is_dir():
        raise DataError(f"{benchmark} root is not a directory: {root}", file=root)
    return root


def require_task_dir(root: Path, name: str, benchmark: str) -> Path:
    """``root/name``, the folder of per-task JSON files, which must exist."""
    json_dir = root / name
    if not json_dir.is_dir():
        raise DataError(
            f"no '{name}/' directory under the {benchmark} root (expected {json_dir}/<task>.json)", file=json_dir
        )
    return json_dir


def require_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{what} does not exist", file=path)
    if not path.is_file():
        raise DataError(f"{what} is not a regular file", file=path)
    return path


def resolve_video(directory: Path, name: str, extensions: Sequence[str]) -> Path:
    """`directory/name.ext` for the first of `extensions` that exists (names with one already are kept).

    With none on disk the first extension's path is returned, so `read_frames` and
    `check_videos_exist` report the missing file by name instead of the loader failing.
    """
    if Path(name).suffix.lower().lstrip(".") in extensions:
        return directory / name
    candidates = [directory / f"{name}.{ext}" for ext in extensions]
    return next((path for path in candidates if path.is_file()), candidates[0])


# --- files ------------------------------------------------------------------------------


def read_json(path: Path, expected: type, track_duplicate_keys: bool = True) -> Any:
    """Parse a JSON file whose top level must be `expected` (list or dict); objects are `JsonObject`s.

    With ``track_duplicate_keys=False`` objects are plain dicts (as TVBench has always read them:
    a key given twice keeps its last value, and messages name the type ``dict``).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"file is not valid UTF-8 ({err})", file=path) from err
    try:
        data = json.loads(text, object_pairs_hook=JsonObject if track_duplicate_keys else None)
    except json.JSONDecodeError as err:
        raise DataError(
            f"invalid JSON at line {err.lineno} column {err.colno} (char {err.pos}): {err.msg}", file=path
        ) from err
    if not isinstance(data, expected):
        kind = "list of entries" if expected is list else "object of entries"
        raise DataError(f"top level must be a JSON {kind}, got {type(data).__name__}", file=path)
    return data


# --- entry fields -----------------------------------------------------------------------


def require_object(entry: Any, where: Where) -> dict:
    if not isinstance(entry, dict):
        raise DataError(f"entry must be a JSON object, got {type(entry).__name__}", **where)
    duplicates = getattr(entry, "duplicate_keys", ())
    if duplicates:
        raise DataError(
            f"entry has the key {duplicates[0]!r} twice (JSON keeps only the last)", field=duplicates[0], **where
        )
    return entry


def relative_path(value: str, field: str, where: Where) -> str:
    """A path inside the benchmark root: not absolute and without '..' (a name must not escape the root)."""
    parts = Path(value).parts
    if Path(value).is_absolute() or ".." in parts or "\\" in value:
        raise DataError(f"must be a relative path inside the benchmark root, got {value!r}", field=field, **where)
    return value


def plain_name(value: str, field: str, where: Where) -> str:
    """A single path component (a file or folder name), so it cannot point outside its folder."""
    relative_path(value, field, where)
    if len(Path(value).parts) != 1:
        raise DataError(f"must be a plain name without '/', got {value!r}", field=field, **where)
    return value


def required_str(entry: dict, field: str, where: Where, allow_empty: bool = False) -> str:
    if field not in entry:
        raise DataError("missing required field", field=field, **where)
    return check_str(entry[field], field, where, allow_empty)


def check_str(value: Any, field: str, where: Where, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise DataError(f"must be a string, got {type(value).__name__}", field=field, **where)
    if not allow_empty and not value.strip():
        raise DataError("must be a non-empty string", field=field, **where)
    return value


def string_list(
    entry: dict, field: str, where: Where, unique: bool = False, within_letters: bool = True
) -> tuple[str, ...]:
    if field not in entry:
        raise DataError("missing required field", field=field, **where)
    return check_string_list(entry[field], field, where, unique, within_letters)


def check_string_list(
    value: Any, field: str, where: Where, unique: bool = False, within_letters: bool = True
) -> tuple[str, ...]:
    """A non-empty list of strings; `unique` rejects a repeated item (it would make an answer
    ambiguous), `within_letters` more than 26 items (option letters stop at Z)."""
    if not isinstance(value, (list, tuple)):
        raise DataError(f"must be a list of strings, got {type(value).__name__}", field=field, **where)
    if not value:
        raise DataError("candidate list is empty", field=field, **where)
    for position, item in enumerate(value):
        if not isinstance(item, str):
            raise DataError(
                f"candidate {position} must be a string, got {type(item).__name__}", field=field, **where
            )
    if unique and len(set(value)) != len(value):
        raise DataError(f"candidates contain duplicates: {value}", field=field, **where)
    if within_letters and len(value) > 26:
        raise DataError(f"{len(value)} candidates; option letters only go up to Z", field=field, **where)
    return tuple(value)


def answer_index(entry: dict, field: str, num_candidates: int, where: Where) -> int:
    """An int answer that indexes the candidates (bools are rejected: True would silently mean 1)."""
    if field not in entry:
        raise DataError("missing required field", field=field, **where)
    value = entry[field]
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"must be an integer option index, got {type(value).__name__}", field=field, **where)
    if not 0 <= value < num_candidates:
        raise DataError(
            f"answer index {value} is out of range for {num_candidates} candidates (0..{num_candidates - 1})",
            field=field,
            **where,
        )
    return value


def positive_seconds(entry: dict, field: str, where: Where) -> float:
    if field not in entry:
        raise DataError("missing required field", field=field, **where)
    value = _seconds(entry[field], field, where)
    if not math.isfinite(value) or value <= 0:
        raise DataError(f"must be a positive finite number of seconds, got {value}", field=field, **where)
    return float(value)


def optional_seconds(entry: dict, field: str, where: Where) -> float | None:
    """A finite, non-negative number of seconds, or None when the field is absent or null."""
    value = entry.get(field)
    if value is None:
        return None
    _seconds(value, field, where)
    if not math.isfinite(value):
        raise DataError(f"must be a finite number of seconds, got {value}", field=field, **where)
    if value < 0:
        raise DataError(f"must not be negative, got {value}", field=field, **where)
    return float(value)


def _seconds(value: Any, field: str, where: Where) -> int | float:
    """`value` itself if it is a number (bools are rejected: True would silently mean 1 s)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"must be a number of seconds, got {type(value).__name__}", field=field, **where)
    return value


# --- tasks, limits, ids -----------------------------------------------------------------


def resolve_tasks(
    requested: Sequence[str] | str | None, valid: Sequence[str], file: Path, benchmark: str
) -> list[str]:
    """The tasks to load in order; None means all of `valid`. Unknown names list the valid ones."""
    if requested is None:
        return list(valid)
    if isinstance(requested, str):
        requested = [requested]  # a bare string would otherwise be iterated character by character
    unknown = [task for task in requested if task not in valid]
    if unknown:
        raise DataError(
            f"unknown {benchmark} task(s) {unknown}; valid tasks are: {', '.join(valid)}", file=file, field="tasks"
        )
    return list(requested)


def present_tasks(json_dir: Path, task_files: Mapping[str, str], benchmark: str) -> list[str]:
    """The tasks (keys of `task_files`, task -> file stem) whose ``json_dir/{stem}.json`` exists, in order.

    With none there, the error lists the expected file names and the JSON files found.
    """
    present = [task for task, stem in task_files.items() if (json_dir / f"{stem}.json").is_file()]
    if not present:
        found = sorted(p.name for p in json_dir.glob("*.json"))
        expected = [f"{stem}.json" for stem in task_files.values()]
        raise DataError(
            f"no {benchmark} task JSON in {json_dir}; expected one of {expected}, found {found}", file=json_dir
        )
    return present


def select_entry_indices(num_entries: int, limit: int, seed: int) -> list[int]:
    """Entry indices `load_tvbench` keeps for one task under `limit`, sorted (file order)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    if limit >= num_entries:
        return list(range(num_entries))
    return sorted(random.Random(seed).sample(range(num_entries), limit))


def keep_seeded_subset(items: list, limit: int | None, seed: int) -> list:
    """At most `limit` items drawn with ``random.Random(seed)``, in their original order (as TVBench)."""
    if limit is None:
        return items
    return [items[i] for i in select_entry_indices(len(items), limit, seed)]


def select_tasks(
    samples: list[Sample],
    tasks: Sequence[str] | str | None,
    limit: int | None,
    seed: int,
    file: Path,
    benchmark: str,
    what: str,
) -> list[Sample]:
    """For a benchmark whose one file holds every task: the requested tasks' samples, a seeded subset each.

    Tasks are the sorted `Sample.task` values found (`what` names the file's content in the error
    when there are none); ids are checked unique before and after (a task may be listed once only).
    """
    reject_duplicate_ids(samples, file)
    found = sorted({sample.task for sample in samples})
    if not found:
        raise DataError(f"the {what} is empty", file=file)
    selected: list[Sample] = []
    for task in resolve_tasks(tasks, found, file, benchmark):
        task_samples = [sample for sample in samples if sample.task == task]
        selected.extend(keep_seeded_subset(task_samples, limit, seed))
    reject_duplicate_ids(selected, file)
    return selected


def _first_and_again(first: str, again: str) -> str:
    return (
        f"duplicate sample id (first at {first}, again at {again}); "
        "ids must be unique and a task may be listed only once"
    )


def reject_duplicate_ids(
    samples: Iterable[Sample],
    file: Path,
    first_source: dict[str, str] | None = None,
    message: Callable[[str, str], str] = _first_and_again,
) -> None:
    """Raise on the first sample whose id was seen before, with ``message(first source, its source)``.

    `first_source` (id -> source of the sample that first had it) is filled in as samples pass, so
    passing the same dict to several calls checks ids across them.
    """
    first_source = {} if first_source is None else first_source
    for sample in samples:
        if sample.sample_id in first_source:
            raise DataError(
                message(first_source[sample.sample_id], sample.source),
                file=file,
                sample=sample.sample_id,
                field="sample_id",
            )
        first_source[sample.sample_id] = sample.source


def extra_fields(entry: dict, fields: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``(field, str(value))`` for each of `fields` the entry has with a non-null value (`Sample.extra`)."""
    return tuple((field, str(entry[field])) for field in fields if entry.get(field) is not None)

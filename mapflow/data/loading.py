"""Pieces shared by the benchmark loaders: reading JSON, checking entry fields, task selection.

Every check raises a `DataError` located like TVBench's: ``where`` is the dict
``{"file": path, "sample": "<id> (entry <n>)"}`` and the failing field is named.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mapflow.data.sample import Sample
from mapflow.data.tvbench import select_entry_indices
from mapflow.errors import DataError

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


# --- layout -----------------------------------------------------------------------------


def check_root(root: str | Path, benchmark: str) -> Path:
    root = Path(root)
    if not root.exists():
        raise DataError(f"{benchmark} root directory does not exist: {root}", file=root)
    if not root.is_dir():
        raise DataError(f"{benchmark} root is not a directory: {root}", file=root)
    return root


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


def read_json(path: Path, expected: type) -> Any:
    """Parse a JSON file whose top level must be `expected` (list or dict); objects are `JsonObject`s."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"file is not valid UTF-8 ({err})", file=path) from err
    try:
        data = json.loads(text, object_pairs_hook=JsonObject)
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


def string_list(entry: dict, field: str, where: Where) -> tuple[str, ...]:
    if field not in entry:
        raise DataError("missing required field", field=field, **where)
    return check_string_list(entry[field], field, where)


def check_string_list(value: Any, field: str, where: Where) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise DataError(f"must be a list of strings, got {type(value).__name__}", field=field, **where)
    if not value:
        raise DataError("candidate list is empty", field=field, **where)
    for position, item in enumerate(value):
        if not isinstance(item, str):
            raise DataError(
                f"candidate {position} must be a string, got {type(item).__name__}", field=field, **where
            )
    if len(value) > 26:
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
    value = entry[field]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"must be a number of seconds, got {type(value).__name__}", field=field, **where)
    if not math.isfinite(value) or value <= 0:
        raise DataError(f"must be a positive finite number of seconds, got {value}", field=field, **where)
    return float(value)


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


def keep_seeded_subset(items: list, limit: int | None, seed: int) -> list:
    """At most `limit` items drawn with ``random.Random(seed)``, in their original order (as TVBench)."""
    if limit is None:
        return items
    return [items[i] for i in select_entry_indices(len(items), limit, seed)]


def reject_duplicate_ids(samples: Iterable[Sample], file: Path) -> None:
    first_source: dict[str, str] = {}
    for sample in samples:
        if sample.sample_id in first_source:
            raise DataError(
                f"duplicate sample id (first at {first_source[sample.sample_id]}, again at {sample.source}); "
                "ids must be unique and a task may be listed only once",
                file=file,
                sample=sample.sample_id,
                field="sample_id",
            )
        first_source[sample.sample_id] = sample.source

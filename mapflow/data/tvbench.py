"""Load TVBench-layout multiple-choice video questions into `Sample`s.

Layout: ``{root}/json/{task}.json`` holds a JSON list of entries
(``video``, ``question``, ``candidates``, ``answer``, optional ``start``/``end`` in seconds);
videos live at ``{root}/video/{task}/{entry.video}``. Every problem is reported as a
`DataError` naming the file, the entry and the field, so a bad benchmark fails loudly at load time.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mapflow.data.sample import Sample
from mapflow.errors import DataError

TVBENCH_TASKS: tuple[str, ...] = (
    "action_antonym",
    "action_count",
    "action_localization",
    "action_sequence",
    "egocentric_sequence",
    "moving_direction",
    "object_count",
    "object_shuffle",
    "scene_transition",
    "unexpected_action",
)

_JSON_DIR = "json"
_VIDEO_DIR = "video"


def load_tvbench(
    root: str | Path,
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    seed: int = 42,
) -> list[Sample]:
    """Load and validate TVBench samples.

    tasks=None loads every TVBench task whose JSON exists. `limit` keeps at most that many
    entries per task, drawn with ``random.Random(seed)`` afresh for each task (so a task's
    choice does not depend on which other tasks are loaded) and kept in file order.
    Video files are not opened here; see `check_videos_exist` and `read_frames`.
    """
    root = Path(root)
    json_dir = _check_layout(root)
    task_names = _resolve_tasks(json_dir, tasks)

    samples: list[Sample] = []
    seen_sources: dict[str, str] = {}
    for task in task_names:
        json_path = json_dir / f"{task}.json"
        task_samples = _load_task(root, task, json_path)
        if limit is not None:
            keep = select_entry_indices(len(task_samples), limit, seed)
            task_samples = [task_samples[i] for i in keep]
        _reject_duplicate_ids(task_samples, json_path, seen_sources)
        samples.extend(task_samples)
    return samples


def select_entry_indices(num_entries: int, limit: int, seed: int) -> list[int]:
    """Entry indices `load_tvbench` keeps for one task under `limit`, sorted (file order)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    if limit >= num_entries:
        return list(range(num_entries))
    return sorted(random.Random(seed).sample(range(num_entries), limit))


def check_videos_exist(samples: Iterable[Sample]) -> list[tuple[Sample, str]]:
    """Samples whose video file cannot be used, each with the reason (empty list = all fine)."""
    problems: list[tuple[Sample, str]] = []
    for sample in samples:
        path = Path(sample.video_path)
        if not path.exists():
            problems.append((sample, f"video file {path} does not exist"))
        elif not path.is_file():
            problems.append((sample, f"video path {path} is not a regular file"))
        elif path.stat().st_size == 0:
            problems.append((sample, f"video file {path} is empty (0 bytes)"))
    return problems


# --- layout -----------------------------------------------------------------------------


def _check_layout(root: Path) -> Path:
    if not root.exists():
        raise DataError(f"TVBench root directory does not exist: {root}", file=root)
    if not root.is_dir():
        raise DataError(f"TVBench root is not a directory: {root}", file=root)
    json_dir = root / _JSON_DIR
    if not json_dir.is_dir():
        raise DataError(
            f"no '{_JSON_DIR}/' directory under the TVBench root (expected {json_dir}/<task>.json)",
            file=json_dir,
        )
    return json_dir


def _resolve_tasks(json_dir: Path, tasks: Sequence[str] | None) -> list[str]:
    if tasks is None:
        present = [t for t in TVBENCH_TASKS if (json_dir / f"{t}.json").is_file()]
        if not present:
            found = sorted(p.name for p in json_dir.glob("*.json"))
            raise DataError(
                f"no TVBench task JSON in {json_dir}; expected one of "
                f"{[t + '.json' for t in TVBENCH_TASKS]}, found {found}",
                file=json_dir,
            )
        return present

    if isinstance(tasks, str):
        # A bare string would otherwise be iterated character by character.
        tasks = [tasks]
    unknown = [t for t in tasks if t not in TVBENCH_TASKS]
    if unknown:
        raise DataError(
            f"unknown TVBench task(s) {unknown}; valid tasks are: {', '.join(TVBENCH_TASKS)}",
            file=json_dir,
            field="tasks",
        )
    for task in tasks:
        json_path = json_dir / f"{task}.json"
        if not json_path.is_file():
            raise DataError(f"task JSON for '{task}' does not exist", file=json_path)
    return list(tasks)


# --- one task file ----------------------------------------------------------------------


def _load_task(root: Path, task: str, json_path: Path) -> list[Sample]:
    entries = _read_json_list(json_path)
    return [_entry_to_sample(root, task, json_path, i, entry) for i, entry in enumerate(entries)]


def _read_json_list(json_path: Path) -> list[Any]:
    try:
        text = json_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"file is not valid UTF-8 ({err})", file=json_path) from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            f"invalid JSON at line {err.lineno} column {err.colno} (char {err.pos}): {err.msg}",
            file=json_path,
        ) from err
    if not isinstance(data, list):
        raise DataError(
            f"top level must be a JSON list of entries, got {type(data).__name__}", file=json_path
        )
    return data


def _entry_to_sample(root: Path, task: str, json_path: Path, index: int, entry: Any) -> Sample:
    sample_id = f"{task}/{index:04d}"
    # Name both the id and the raw entry index so the message can be matched to either.
    where = {"file": json_path, "sample": f"{sample_id} (entry {index})"}

    if not isinstance(entry, dict):
        raise DataError(f"entry must be a JSON object, got {type(entry).__name__}", **where)

    video = _required_str(entry, "video", where)
    question = _required_str(entry, "question", where, allow_empty=True)
    candidates = _candidates(entry, where)
    answer = _required_str(entry, "answer", where, allow_empty=True)
    if answer not in candidates:
        raise DataError(
            f"answer {answer!r} is not one of the candidates {list(candidates)}",
            field="answer",
            **where,
        )
    start = _optional_seconds(entry, "start", where)
    end = _optional_seconds(entry, "end", where)
    if start is not None and end is not None and start > end:
        raise DataError(f"clip start {start} s is after end {end} s", field="start", **where)

    return Sample(
        sample_id=sample_id,
        task=task,
        video_path=root / _VIDEO_DIR / task / video,
        question=question,
        candidates=candidates,
        answer_index=candidates.index(answer),
        start=start,
        end=end,
        source=f"{json_path}[entry {index}]",
    )


def _required_str(entry: dict, field: str, where: dict, allow_empty: bool = False) -> str:
    if field not in entry:
        raise DataError("missing required field", field=field, **where)
    value = entry[field]
    if not isinstance(value, str):
        raise DataError(f"must be a string, got {type(value).__name__}", field=field, **where)
    if not allow_empty and not value.strip():
        raise DataError("must be a non-empty string", field=field, **where)
    return value


def _candidates(entry: dict, where: dict) -> tuple[str, ...]:
    field = "candidates"
    if field not in entry:
        raise DataError("missing required field", field=field, **where)
    value = entry[field]
    if not isinstance(value, list):
        raise DataError(f"must be a list of strings, got {type(value).__name__}", field=field, **where)
    if not value:
        raise DataError("candidate list is empty", field=field, **where)
    for position, candidate in enumerate(value):
        if not isinstance(candidate, str):
            raise DataError(
                f"candidate {position} must be a string, got {type(candidate).__name__}",
                field=field,
                **where,
            )
    if len(set(value)) != len(value):
        # A repeated candidate makes the answer index ambiguous.
        raise DataError(f"candidates contain duplicates: {value}", field=field, **where)
    return tuple(value)


def _optional_seconds(entry: dict, field: str, where: dict) -> float | None:
    value = entry.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"must be a number of seconds, got {type(value).__name__}", field=field, **where)
    if not math.isfinite(value):
        raise DataError(f"must be a finite number of seconds, got {value}", field=field, **where)
    if value < 0:
        raise DataError(f"must not be negative, got {value}", field=field, **where)
    return float(value)


def _reject_duplicate_ids(samples: list[Sample], json_path: Path, seen_sources: dict[str, str]) -> None:
    """Ids are unique within a file by construction; this catches a task loaded twice."""
    for sample in samples:
        if sample.sample_id in seen_sources:
            raise DataError(
                f"duplicate sample id (first loaded from {seen_sources[sample.sample_id]}); "
                "was a task listed twice?",
                file=json_path,
                sample=sample.sample_id,
                field="sample_id",
            )
        seen_sources[sample.sample_id] = sample.source

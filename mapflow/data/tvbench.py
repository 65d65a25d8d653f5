"""Load TVBench-layout multiple-choice video questions into `Sample`s.

Layout: ``{root}/json/{task}.json`` holds a JSON list of entries
(``video``, ``question``, ``candidates``, ``answer``, optional ``start``/``end`` in seconds);
videos live at ``{root}/video/{task}/{entry.video}``. Every problem is reported as a
`DataError` naming the file, the entry and the field, so a bad benchmark fails loudly at load time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from . import loading
from .loading import select_entry_indices as select_entry_indices  # re-exported (public name)
from .sample import Sample
from ..errors import DataError

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
    root = loading.check_root(root, "TVBench")
    json_dir = loading.require_task_dir(root, _JSON_DIR, "TVBench")
    task_names = _resolve_tasks(json_dir, tasks)

    samples: list[Sample] = []
    seen_sources: dict[str, str] = {}
    for task in task_names:
        json_path = json_dir / f"{task}.json"
        task_samples = loading.keep_good(loading.keep_seeded_subset(_load_task(root, task, json_path), limit, seed))
        # Ids are unique within a file by construction; this catches a task loaded twice.
        loading.reject_duplicate_ids(task_samples, json_path, seen_sources, _task_listed_twice)
        samples.extend(task_samples)
    return samples


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


def _resolve_tasks(json_dir: Path, tasks: Sequence[str] | None) -> list[str]:
    if tasks is None:
        return loading.present_tasks(json_dir, {task: task for task in TVBENCH_TASKS}, "TVBench")
    task_names = loading.resolve_tasks(tasks, TVBENCH_TASKS, json_dir, "TVBench")
    # Every requested file is checked before any is read.
    for task in task_names:
        json_path = json_dir / f"{task}.json"
        if not json_path.is_file():
            raise DataError(f"task JSON for '{task}' does not exist", file=json_path)
    return task_names


def _task_listed_twice(first: str, again: str) -> str:
    return f"duplicate sample id (first loaded from {first}); was a task listed twice?"


# --- one task file ----------------------------------------------------------------------


def _load_task(root: Path, task: str, json_path: Path) -> list[Sample]:
    # Plain dicts: TVBench entries have never been checked for a key given twice.
    entries = loading.read_json(json_path, list, track_duplicate_keys=False)
    return [
        loading.parse_entry(partial(_entry_to_sample, root, task, json_path, i, entry), f"{task}/{i:04d}", task,
                            f"{json_path}[entry {i}]")
        for i, entry in enumerate(entries)
    ]


def _entry_to_sample(root: Path, task: str, json_path: Path, index: int, entry: Any) -> Sample:
    sample_id = f"{task}/{index:04d}"
    # Name both the id and the raw entry index so the message can be matched to either.
    where = {"file": json_path, "sample": f"{sample_id} (entry {index})"}
    loading.require_object(entry, where)

    video = loading.required_str(entry, "video", where)
    question = loading.required_str(entry, "question", where, allow_empty=True)
    # A repeated candidate makes the answer ambiguous; TVBench sets no 26-option cap.
    candidates = loading.string_list(entry, "candidates", where, unique=True, within_letters=False)
    answer = loading.required_str(entry, "answer", where, allow_empty=True)
    if answer not in candidates:
        raise DataError(
            f"answer {answer!r} is not one of the candidates {list(candidates)}",
            field="answer",
            **where,
        )
    start = loading.optional_seconds(entry, "start", where)
    end = loading.optional_seconds(entry, "end", where)
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

"""Load TOMATO multiple-choice video questions into `Sample`s.

Layout (spec §3): ``{root}/jsons/{stem}.json`` is a JSON **object** mapping an entry name to
``{question, options, answer (int index), demonstration_type, key}``; the video is
``{root}/videos/{demonstration_type}/{key}.mp4``. Task names are the paper's, mapped from the
file stems (``shape&trend.json`` -> ``ShapeTrend``). Options are written "(A) text".
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

from . import loading
from .sample import Sample
from ..errors import DataError

# Paper task name -> file stem, in the sorted order the paper code uses.
TOMATO_TASK_FILES: dict[str, str] = {
    "Count": "count",
    "Direction": "direction",
    "Rotation": "rotation",
    "ShapeTrend": "shape&trend",
    "VelocityFrequency": "velocity&frequency",
    "VisualCues": "visual_cues",
}
TOMATO_TASKS: tuple[str, ...] = tuple(TOMATO_TASK_FILES)

_JSON_DIR = "jsons"
_VIDEO_DIR = "videos"


def load_tomato(
    root: str | Path,
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    seed: int = 42,
) -> list[Sample]:
    """Load and validate TOMATO samples (ids ``{Task}/{entry name}``).

    tasks=None loads every task whose JSON exists; `limit` and `seed` work as in `load_tvbench`
    (a seeded subset per task, kept in file order). Videos are not opened here.
    """
    root = loading.check_root(root, "TOMATO")
    json_dir = loading.require_task_dir(root, _JSON_DIR, "TOMATO")
    samples: list[Sample] = []
    for task in _resolve_tasks(json_dir, tasks):
        json_path = loading.require_file(json_dir / f"{TOMATO_TASK_FILES[task]}.json", f"task JSON for '{task}'")
        task_samples = _load_task(root, task, json_path)
        samples.extend(loading.keep_good(loading.keep_seeded_subset(task_samples, limit, seed)))
    loading.reject_duplicate_ids(samples, json_dir)
    return samples


def _resolve_tasks(json_dir: Path, tasks: Sequence[str] | None) -> list[str]:
    if tasks is not None:
        return loading.resolve_tasks(tasks, TOMATO_TASKS, json_dir, "TOMATO")
    return loading.present_tasks(json_dir, TOMATO_TASK_FILES, "TOMATO")


def _load_task(root: Path, task: str, json_path: Path) -> list[Sample]:
    entries = loading.read_json(json_path, dict)
    if entries.duplicate_keys:
        # json.loads would silently keep only the last entry of that name.
        raise DataError(
            "duplicate sample id (the entry name appears twice in the file)",
            file=json_path,
            sample=f"{task}/{entries.duplicate_keys[0]}",
            field="sample_id",
        )
    return [
        loading.parse_entry(partial(_entry_to_sample, root, task, json_path, position, name, entry), f"{task}/{name}",
                            task, f"{json_path}[entry {position} '{name}']")
        for position, (name, entry) in enumerate(entries.items())
    ]


def _entry_to_sample(root: Path, task: str, json_path: Path, position: int, name: str, entry) -> Sample:
    sample_id = f"{task}/{name}"
    where = {"file": json_path, "sample": f"{sample_id} (entry {position})"}
    loading.require_object(entry, where)

    question = loading.required_str(entry, "question", where, allow_empty=True)
    options = loading.string_list(entry, "options", where)
    answer = loading.answer_index(entry, "answer", len(options), where)
    demonstration_type = loading.required_str(entry, "demonstration_type", where)
    loading.plain_name(demonstration_type, "demonstration_type", where)
    key = loading.required_str(entry, "key", where)
    loading.plain_name(key, "key", where)
    return Sample(
        sample_id=sample_id,
        task=task,
        video_path=root / _VIDEO_DIR / demonstration_type / f"{key}.mp4",
        question=question,
        candidates=options,
        answer_index=answer,
        source=f"{json_path}[entry {position} '{name}']",
        option_format="paren",
    )

"""Load LongVideoBench (validation split) multiple-choice questions into `Sample`s.

Layout (spec §3): ``{root}/lvb_val.json`` is a JSON list of entries with ``question``,
``candidates``, ``correct_choice`` (int index), ``video_path`` (relative to ``{root}/videos/``),
``duration`` (seconds) and ``question_category`` (the task, e.g. ``"T3O"``); an optional ``id``
names the sample. Options are written "(A) text" (the LLaVA path). The stated `duration` is
kept on the sample because LongVideoBench's own frame rule (`video.longvideobench_indices`)
uses it rather than the decoded length.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from . import loading
from .sample import Sample
from ..errors import DataError

_JSON_NAME = "lvb_val.json"
_VIDEO_DIR = "videos"
# Carried into `Sample.extra` when present; they group results but change no prompt.
_EXTRA_FIELDS = ("id", "video_id", "level", "topic_category", "duration_group")


def load_longvideobench(
    root: str | Path,
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    seed: int = 42,
) -> list[Sample]:
    """Load and validate LongVideoBench samples (ids ``{question_category}/{id or entry index}``).

    Tasks are the question categories found in the file, in sorted order (the paper's O2E, O3O
    and SOS are indices 2, 3 and 8 of that order); tasks=None loads all of them. `limit` and
    `seed` draw a seeded subset per task as in `load_tvbench`. Videos are not opened here.
    """
    root = loading.check_root(root, "LongVideoBench")
    json_path = loading.require_file(root / _JSON_NAME, f"LongVideoBench question file '{_JSON_NAME}'")
    entries = loading.read_json(json_path, list)
    parsed = [
        loading.parse_entry(partial(_entry_to_sample, root, json_path, index, entry),
                            *loading.fallback_id(entry, "question_category", "id", index),
                            f"{json_path}[entry {index}]")
        for index, entry in enumerate(entries)
    ]
    return loading.keep_good(
        loading.select_tasks(parsed, tasks, limit, seed, json_path, "LongVideoBench", "question list"))


def _entry_to_sample(root: Path, json_path: Path, index: int, entry: Any) -> Sample:
    where = {"file": json_path, "sample": f"entry {index}"}
    loading.require_object(entry, where)
    native_id = entry["id"] if entry.get("id") is not None else f"{index:04d}"
    if not isinstance(native_id, str) or not native_id.strip():
        raise DataError(f"must be a non-empty string, got {native_id!r}", field="id", **where)
    category = loading.required_str(entry, "question_category", where)
    sample_id = f"{category}/{native_id}"
    where = {"file": json_path, "sample": f"{sample_id} (entry {index})"}

    question = loading.required_str(entry, "question", where, allow_empty=True)
    candidates = loading.string_list(entry, "candidates", where)
    answer = loading.answer_index(entry, "correct_choice", len(candidates), where)
    video = loading.required_str(entry, "video_path", where)
    loading.relative_path(video, "video_path", where)
    duration = loading.positive_seconds(entry, "duration", where)
    return Sample(
        sample_id=sample_id,
        task=category,
        video_path=root / _VIDEO_DIR / video,
        question=question,
        candidates=candidates,
        answer_index=answer,
        source=f"{json_path}[entry {index}]",
        option_format="paren",
        duration=duration,
        extra=loading.extra_fields(entry, _EXTRA_FIELDS),
    )

"""Load VCGBench (Video-ChatGPT benchmark) free-form questions into `Sample`s.

Layout (spec §3): ``{root}/Benchmarking_QA/{generic_qa,temporal_qa,consistency_qa}.json``, each a
JSON list of ``{Q, A, video_name}``; consistency entries ask the same thing twice as ``Q1``/``Q2``
and become two samples (``.../Q1`` and ``.../Q2``) sharing one reference answer. Videos are
``{root}/Test_Videos/{video_name}.{mp4|mkv}`` (the extension is chosen at load time).

The questions are free-form: a sample has no candidates, ``answer_index == NO_ANSWER_INDEX``
and the reference answer in ``Sample.reference_answer``; its multiple-choice accessors raise.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from . import loading
from .sample import NO_ANSWER_INDEX, Sample
from ..errors import DataError

VCGBENCH_TASKS: tuple[str, ...] = ("generic_qa", "temporal_qa", "consistency_qa")
VCGBENCH_DEFAULT_TASKS: tuple[str, ...] = ("temporal_qa",)  # the only one the paper analyses (§C.2)
VCGBENCH_EXTENSIONS: tuple[str, ...] = ("mp4", "mkv")

_JSON_DIR = "Benchmarking_QA"
_VIDEO_DIR = "Test_Videos"
_PAIRED_KEYS = ("Q1", "Q2")


def load_vcgbench(
    root: str | Path,
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    seed: int = 42,
) -> list[Sample]:
    """Load and validate VCGBench samples (ids ``{task}/{entry:04d}``, plus ``/Q1`` ``/Q2`` for pairs).

    tasks=None loads ``temporal_qa`` only. `limit` keeps a seeded subset of **entries** per task as
    in `load_tvbench`, so a consistency pair is kept or dropped whole. Videos are not opened here.
    """
    root = loading.check_root(root, "VCGBench")
    json_dir = loading.require_task_dir(root, _JSON_DIR, "VCGBench")
    requested = VCGBENCH_DEFAULT_TASKS if tasks is None else tasks
    samples: list[Sample] = []
    for task in loading.resolve_tasks(requested, VCGBENCH_TASKS, json_dir, "VCGBench"):
        json_path = loading.require_file(json_dir / f"{task}.json", f"task JSON for '{task}'")
        entries = loading.read_json(json_path, list)
        video_paths: dict[str, Path] = {}
        per_entry = [
            loading.parse_entry(partial(_entry_to_samples, root, task, json_path, i, entry, video_paths),
                                f"{task}/{i:04d}", task, f"{json_path}[entry {i}]")
            for i, entry in enumerate(entries)
        ]
        for entry_samples in loading.keep_good(loading.keep_seeded_subset(per_entry, limit, seed)):
            samples.extend(entry_samples)
    loading.reject_duplicate_ids(samples, json_dir)
    return samples


def _entry_to_samples(
    root: Path, task: str, json_path: Path, index: int, entry: Any, video_paths: dict[str, Path]
) -> list[Sample]:
    entry_id = f"{task}/{index:04d}"
    where = {"file": json_path, "sample": f"{entry_id} (entry {index})"}
    loading.require_object(entry, where)

    answer = loading.required_str(entry, "A", where)
    video_name = loading.required_str(entry, "video_name", where)
    loading.plain_name(video_name, "video_name", where)
    if video_name not in video_paths:
        video_paths[video_name] = loading.resolve_video(root / _VIDEO_DIR, video_name, VCGBENCH_EXTENSIONS)

    if "Q" in entry:
        questions = [("Q", entry_id, loading.required_str(entry, "Q", where))]
    elif any(key in entry for key in _PAIRED_KEYS):
        questions = [(key, f"{entry_id}/{key}", loading.required_str(entry, key, where)) for key in _PAIRED_KEYS]
    else:
        raise DataError("missing required field (or the pair 'Q1'/'Q2')", field="Q", **where)

    return [
        Sample(
            sample_id=sample_id,
            task=task,
            video_path=video_paths[video_name],
            question=question,
            candidates=(),
            answer_index=NO_ANSWER_INDEX,
            source=f"{json_path}[entry {index}]",
            reference_answer=answer,
            extra=(("question_key", key), ("video_name", video_name)),
        )
        for key, sample_id, question in questions
    ]

"""Load Video-MME multiple-choice questions into `Sample`s.

Layout (spec §3): ``{root}/videomme/test-00000-of-00001.parquet`` with one row per question:
``url`` (the YouTube URL; its video id names the file), ``question``, ``options`` (already
written ``"A. text"``), ``answer`` (a letter) and ``task_type`` (the task). Videos are
``{root}/data/{id}.{mp4|avi|mov|mkv}``; the extension is chosen **at load time** (the first
that exists, in that order), so ``Sample.video_path`` is a real file. The "A. " prefixes are
stripped into `candidates` and the sample's ``option_format`` is ``"dot"`` so prompts can
write them back exactly as the paper code does (whose answer prompt is then "Best option:").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from . import loading
from .sample import OPTION_LETTERS, Sample
from ..errors import DataError

_PARQUET = Path("videomme") / "test-00000-of-00001.parquet"
_VIDEO_DIR = "data"
VIDEOMME_EXTENSIONS: tuple[str, ...] = ("mp4", "avi", "mov", "mkv")
_REQUIRED_COLUMNS = ("url", "question", "options", "answer", "task_type")
_EXTRA_FIELDS = ("question_id", "video_id", "videoID", "duration", "domain", "sub_category")
_OPTION_PREFIX = re.compile(r"([A-Z])\.\s*(.*)", re.DOTALL)
_YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]{6,}")


def load_videomme(
    root: str | Path,
    tasks: Sequence[str] | None = None,
    limit: int | None = None,
    seed: int = 42,
) -> list[Sample]:
    """Load and validate Video-MME samples (ids ``{task_type}/{question_id or row}``).

    Tasks are the task types in the file, in sorted order (the paper's Action Recognition and
    Spatial Perception are indices 1 and 8 of the 12); tasks=None loads all. `limit` and `seed`
    draw a seeded subset per task as in `load_tvbench`. Needs pyarrow to read the parquet file.
    """
    root = loading.check_root(root, "Video-MME")
    parquet_path = loading.require_file(root / _PARQUET, "Video-MME question file")
    rows = _read_rows(parquet_path)
    video_paths: dict[str, Path] = {}  # about three questions share each video: look it up once
    parsed = [
        loading.parse_entry(partial(_row_to_sample, root, parquet_path, index, row, video_paths),
                            *loading.fallback_id(row, "task_type", "question_id", index),
                            f"{parquet_path}[row {index}]")
        for index, row in enumerate(rows)
    ]
    return loading.keep_good(
        loading.select_tasks(parsed, tasks, limit, seed, parquet_path, "Video-MME", "question table"))


def youtube_video_id(url: str) -> str | None:
    """The video id of a YouTube URL (watch?v=, youtu.be/, /shorts/, /embed/), or None."""
    parsed = urlparse(url.strip())
    host = parsed.netloc.lower().removeprefix("www.").removeprefix("m.")
    candidate = None
    if host == "youtu.be":
        candidate = parsed.path.strip("/").split("/")[0]
    elif host.endswith("youtube.com"):
        if parsed.path == "/watch":
            candidate = parse_qs(parsed.query).get("v", [None])[0]
        elif parsed.path.startswith(("/shorts/", "/embed/", "/v/")):
            candidate = parsed.path.split("/")[2]
    if candidate and _YOUTUBE_ID.fullmatch(candidate):
        return candidate
    return None


def _read_rows(parquet_path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError("reading the Video-MME parquet file needs pyarrow (pip install pyarrow)") from err
    try:
        table = pq.read_table(parquet_path)
    except Exception as err:  # pyarrow raises ArrowInvalid/OSError for unreadable files
        raise DataError(f"cannot read parquet file ({type(err).__name__}: {err})", file=parquet_path) from err
    missing = [column for column in _REQUIRED_COLUMNS if column not in table.column_names]
    if missing:
        raise DataError(
            f"missing required column(s) {missing}; found {table.column_names}", file=parquet_path, field=missing[0]
        )
    return table.to_pylist()


def _row_to_sample(
    root: Path, parquet_path: Path, index: int, row: dict[str, Any], video_paths: dict[str, Path]
) -> Sample:
    where = {"file": parquet_path, "sample": f"row {index}"}
    native_id = row.get("question_id") or f"{index:04d}"
    if not isinstance(native_id, str):
        raise DataError(f"must be a string, got {type(native_id).__name__}", field="question_id", **where)
    task = loading.required_str(row, "task_type", where)
    sample_id = f"{task}/{native_id}"
    where = {"file": parquet_path, "sample": f"{sample_id} (row {index})"}

    url = loading.required_str(row, "url", where)
    video_id = youtube_video_id(url)
    if video_id is None:
        raise DataError(f"cannot find a YouTube video id in {url!r}", field="url", **where)
    question = loading.required_str(row, "question", where, allow_empty=True)
    candidates = _strip_option_letters(loading.string_list(row, "options", where), where)
    answer = loading.required_str(row, "answer", where).strip()
    letters = OPTION_LETTERS[: len(candidates)]
    if len(answer) != 1 or answer not in letters:
        raise DataError(f"answer {answer!r} is not one of the option letters {list(letters)}", field="answer", **where)
    if video_id not in video_paths:
        video_paths[video_id] = loading.resolve_video(root / _VIDEO_DIR, video_id, VIDEOMME_EXTENSIONS)
    return Sample(
        sample_id=sample_id,
        task=task,
        video_path=video_paths[video_id],
        question=question,
        candidates=candidates,
        answer_index=letters.index(answer),
        source=f"{parquet_path}[row {index}]",
        option_format="dot",
        extra=loading.extra_fields(row, _EXTRA_FIELDS),
    )


def _strip_option_letters(options: tuple[str, ...], where: dict[str, Any]) -> tuple[str, ...]:
    """``("A. x", "B. y")`` -> ``("x", "y")``; each letter must match its position."""
    stripped = []
    for position, option in enumerate(options):
        match = _OPTION_PREFIX.fullmatch(option.strip())
        expected = OPTION_LETTERS[position]
        if match is None or match.group(1) != expected:
            raise DataError(
                f"option {position} must start with '{expected}. ', got {option!r}", field="options", **where
            )
        stripped.append(match.group(2))
    return tuple(stripped)

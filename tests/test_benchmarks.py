"""Tests for the benchmark loaders (TOMATO, LongVideoBench, Video-MME, VCGBench), the registry,
the frame rules, the decode timeout and the on-disk frame cache.

Every fixture is built on the fly in tmp_path in the benchmark's published layout, with tiny
real mp4 videos copied from one file written once per module.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from mapflow.data import (
    BENCHMARKS,
    FRAME_RULES,
    NO_ANSWER_INDEX,
    TOMATO_TASKS,
    Sample,
    check_videos_exist,
    frame_cache,
    frame_indices,
    load_longvideobench,
    load_tomato,
    load_tvbench,
    load_vcgbench,
    load_videomme,
    longvideobench_indices,
    read_benchmark,
    read_frames,
    video,
)
from mapflow.data.frame_cache import FrameCache, FrameCacheKey
from mapflow.data.tvbench import select_entry_indices
from mapflow.data.videomme import youtube_video_id
from mapflow.errors import DataError
from mapflow.organism.synthetic import write_video

VIDEO_FRAMES = 16
VIDEO_FPS = 8


# --- fixture builders -------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_bytes(tmp_path_factory) -> bytes:
    """A 16-frame, 8 fps, 32x32 mp4 (2 s) that every layout copies."""
    frames = np.random.default_rng(0).integers(0, 256, (VIDEO_FRAMES, 32, 32, 3), dtype=np.uint8)
    path = write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames, fps=VIDEO_FPS)
    return path.read_bytes()


def put_video(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def tomato_entry(key: str = "k0", answer=1, demonstration_type: str = "human") -> dict:
    return {
        "question": "How many times does the hand wave?",
        "options": ["one", "two", "three"],
        "answer": answer,
        "demonstration_type": demonstration_type,
        "key": key,
    }


def write_tomato(root: Path, files: dict[str, dict], clip: bytes | None = None) -> Path:
    for stem, entries in files.items():
        write_json(root / "jsons" / f"{stem}.json", entries)
        for entry in entries.values():
            if clip is not None and isinstance(entry, dict) and "key" in entry:
                put_video(root / "videos" / entry["demonstration_type"] / f"{entry['key']}.mp4", clip)
    return root


def lvb_entry(i: int, category: str = "T3O", **changes) -> dict:
    entry = {
        "id": f"vid{i}_0",
        "question": f"What happens {i}?",
        "candidates": ["a", "b", "c", "d"],
        "correct_choice": 2,
        "video_path": f"vid{i}.mp4",
        "duration": 2.0,
        "question_category": category,
        "level": "L2-Relation",
    }
    entry.update(changes)
    return entry


def write_lvb(root: Path, entries: list, clip: bytes | None = None) -> Path:
    write_json(root / "lvb_val.json", entries)
    for entry in entries:
        if clip is not None and isinstance(entry, dict) and isinstance(entry.get("video_path"), str):
            put_video(root / "videos" / entry["video_path"], clip)
    return root


def videomme_row(i: int, task: str = "Action Recognition", video_id: str = "fFjv93ACGo8", **changes) -> dict:
    row = {
        "video_id": "001",
        "duration": "short",
        "question_id": f"001-{i}",
        "url": f"https://www.youtube.com/watch?v={video_id}",
        "task_type": task,
        "question": f"What colour is thing {i}?",
        "options": ["A. red", "B. green", "C. blue", "D. black"],
        "answer": "C",
    }
    row.update(changes)
    return row


def write_videomme(root: Path, rows: list[dict]) -> Path:
    import pandas as pd

    path = root / "videomme" / "test-00000-of-00001.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)
    return path


def vcg_entry(i: int, **changes) -> dict:
    entry = {"Q": f"What happens after step {i}?", "A": f"The man jumps {i}.", "video_name": f"v_{i}"}
    entry.update(changes)
    return entry


def write_vcg(root: Path, files: dict[str, list], clip: bytes | None = None, ext: str = "mp4") -> Path:
    for task, entries in files.items():
        write_json(root / "Benchmarking_QA" / f"{task}.json", entries)
        for entry in entries:
            if clip is not None and isinstance(entry, dict) and isinstance(entry.get("video_name"), str):
                put_video(root / "Test_Videos" / f"{entry['video_name']}.{ext}", clip)
    return root


def assert_located(info: pytest.ExceptionInfo, file: Path, *parts: str, field: str | None = None) -> None:
    """The DataError names the file, every part (sample id, entry) and the field."""
    message = str(info.value)
    assert str(file) in message, message
    for part in parts:
        assert part in message, message
    if field is not None:
        assert f"field '{field}'" in message, message
        assert info.value.field == field


# --- TOMATO -----------------------------------------------------------------------------


def test_tomato_layout_fields_and_task_names(tmp_path, clip_bytes):
    write_tomato(
        tmp_path,
        {
            "shape&trend": {"s1": tomato_entry("a1", answer=0, demonstration_type="object")},
            "count": {"c1": tomato_entry("b1", answer=2), "c2": tomato_entry("b2")},
        },
        clip_bytes,
    )
    samples = load_tomato(tmp_path)
    assert [s.sample_id for s in samples] == ["Count/c1", "Count/c2", "ShapeTrend/s1"]
    first = samples[0]
    assert first.task == "Count"
    assert first.video_path == tmp_path / "videos" / "human" / "b1.mp4"
    assert first.candidates == ("one", "two", "three")
    assert (first.answer_index, first.answer_letter, first.answer) == (2, "C", "three")
    assert first.option_format == "paren"
    assert first.formatted_options == ("(A) one", "(B) two", "(C) three")
    assert str(tmp_path / "jsons" / "count.json") in first.source
    assert samples[2].video_path == tmp_path / "videos" / "object" / "a1.mp4"
    assert check_videos_exist(samples) == []
    assert read_frames(first).frames.shape == (8, 32, 32, 3)
    assert [s.task for s in load_tomato(tmp_path, tasks=["ShapeTrend"])] == ["ShapeTrend"]


def test_tomato_task_names_are_the_papers_sorted_names():
    assert TOMATO_TASKS == ("Count", "Direction", "Rotation", "ShapeTrend", "VelocityFrequency", "VisualCues")


def test_tomato_duplicate_entry_name_is_a_duplicate_id(tmp_path):
    path = tmp_path / "jsons" / "count.json"
    path.parent.mkdir(parents=True)
    entry = json.dumps(tomato_entry())
    path.write_text(f'{{"c1": {entry}, "c1": {entry}}}', encoding="utf-8")
    with pytest.raises(DataError, match="duplicate sample id") as info:
        load_tomato(tmp_path)
    assert_located(info, path, "Count/c1", field="sample_id")


def test_tomato_missing_layout_pieces(tmp_path):
    (tmp_path / "videos").mkdir()
    with pytest.raises(DataError, match="'jsons/'"):
        load_tomato(tmp_path)
    write_json(tmp_path / "jsons" / "notes.json", {})
    with pytest.raises(DataError, match="no TOMATO task JSON") as info:
        load_tomato(tmp_path)
    assert "notes.json" in str(info.value) and "shape&trend.json" in str(info.value)
    with pytest.raises(DataError, match="does not exist") as info:
        load_tomato(tmp_path, tasks=["Rotation"])
    assert "rotation.json" in str(info.value)


def test_tomato_top_level_must_be_an_object(tmp_path):
    path = write_json(tmp_path / "jsons" / "count.json", [tomato_entry()])
    with pytest.raises(DataError, match="JSON object of entries") as info:
        load_tomato(tmp_path)
    assert_located(info, path)


TOMATO_BAD = {
    "answer out of range": (lambda e: e.update(answer=3), "answer", "out of range"),
    "negative answer": (lambda e: e.update(answer=-1), "answer", "out of range"),
    "answer is text": (lambda e: e.update(answer="two"), "answer", "integer"),
    "answer is bool": (lambda e: e.update(answer=True), "answer", "integer"),
    "missing options": (lambda e: e.pop("options"), "options", "missing"),
    "options not a list": (lambda e: e.update(options="one"), "options", "list"),
    "empty options": (lambda e: e.update(options=[]), "options", "empty"),
    "missing key": (lambda e: e.pop("key"), "key", "missing"),
    "key escapes the folder": (lambda e: e.update(key="../k"), "key", "relative path"),
    "demonstration_type not str": (lambda e: e.update(demonstration_type=3), "demonstration_type", "string"),
}


@pytest.mark.parametrize("case", list(TOMATO_BAD))
def test_tomato_bad_entry_names_file_entry_and_field(tmp_path, case):
    mutate, field, detail = TOMATO_BAD[case]
    bad = tomato_entry("k1")
    mutate(bad)
    path = write_tomato(tmp_path, {"direction": {"ok": tomato_entry(), "bad": bad}}) / "jsons" / "direction.json"
    with pytest.raises(DataError) as info:
        load_tomato(tmp_path)
    assert_located(info, path, "Direction/bad", "entry 1", detail, field=field)


# --- LongVideoBench ---------------------------------------------------------------------


def test_longvideobench_layout_and_fields(tmp_path, clip_bytes):
    write_lvb(tmp_path, [lvb_entry(0, "T3O"), lvb_entry(1, "E2O"), lvb_entry(2, "T3O", correct_choice=0)], clip_bytes)
    samples = load_longvideobench(tmp_path)
    assert [s.sample_id for s in samples] == ["E2O/vid1_0", "T3O/vid0_0", "T3O/vid2_0"]
    first = samples[0]
    assert first.task == "E2O" and first.video_path == tmp_path / "videos" / "vid1.mp4"
    assert (first.answer_index, first.answer_letter, first.duration) == (2, "C", 2.0)
    assert first.option_format == "paren" and dict(first.extra)["level"] == "L2-Relation"
    assert [s.sample_id for s in load_longvideobench(tmp_path, tasks="T3O")] == ["T3O/vid0_0", "T3O/vid2_0"]


def test_longvideobench_frames_follow_the_stated_duration(tmp_path, clip_bytes):
    write_lvb(tmp_path, [lvb_entry(0, duration=2.0)], clip_bytes)
    (sample,) = load_longvideobench(tmp_path)
    frames = read_frames(sample, num_frames=8, rule="longvideobench")
    # n = min(8, int(2.0)) = 2, step = int(int(2.0*8)/2) = 8 -> [0, 8], padded with 8.
    assert frames.indices.tolist() == [0, 8, 8, 8, 8, 8, 8, 8]
    assert frames.frames.shape == (8, 32, 32, 3)


def test_longvideobench_unknown_task_lists_the_categories(tmp_path):
    path = write_lvb(tmp_path, [lvb_entry(0, "T3O"), lvb_entry(1, "SOS")]) / "lvb_val.json"
    with pytest.raises(DataError) as info:
        load_longvideobench(tmp_path, tasks=["T3O", "XYZ"])
    assert_located(info, path, "'XYZ'", "SOS, T3O", field="tasks")


def test_longvideobench_duplicate_ids(tmp_path):
    path = write_lvb(tmp_path, [lvb_entry(0), lvb_entry(1, id="vid0_0")]) / "lvb_val.json"
    with pytest.raises(DataError, match="duplicate sample id") as info:
        load_longvideobench(tmp_path)
    assert_located(info, path, "T3O/vid0_0", "entry 0", "entry 1", field="sample_id")


LVB_BAD = {
    "answer out of range": ({"correct_choice": 4}, "correct_choice", "out of range"),
    "answer is a letter": ({"correct_choice": "C"}, "correct_choice", "integer"),
    "missing duration": ({"duration": None}, "duration", "number"),
    "zero duration": ({"duration": 0}, "duration", "positive"),
    "candidate not str": ({"candidates": ["a", 1]}, "candidates", "candidate 1"),
    "absolute video path": ({"video_path": "/etc/passwd"}, "video_path", "relative path"),
    "category not str": ({"question_category": 7}, "question_category", "string"),
}


@pytest.mark.parametrize("case", list(LVB_BAD))
def test_longvideobench_bad_entry_names_file_entry_and_field(tmp_path, case):
    changes, field, detail = LVB_BAD[case]
    path = write_lvb(tmp_path, [lvb_entry(0), lvb_entry(1, **changes)]) / "lvb_val.json"
    with pytest.raises(DataError) as info:
        load_longvideobench(tmp_path)
    assert_located(info, path, "entry 1", detail, field=field)


def test_longvideobench_entry_must_be_an_object(tmp_path):
    path = write_lvb(tmp_path, [lvb_entry(0), "oops"]) / "lvb_val.json"
    with pytest.raises(DataError, match="JSON object") as info:
        load_longvideobench(tmp_path)
    assert_located(info, path, "entry 1")


# --- Video-MME --------------------------------------------------------------------------


def test_videomme_layout_option_style_and_extension_lookup(tmp_path, clip_bytes):
    write_videomme(
        tmp_path,
        [
            videomme_row(1, video_id="fFjv93ACGo8"),
            videomme_row(
                2, task="Spatial Perception", video_id="Ab-_12345xy", url="https://youtu.be/Ab-_12345xy", answer="A"
            ),
            videomme_row(3, video_id="zzzzzzzzzzz"),
        ],
    )
    put_video(tmp_path / "data" / "fFjv93ACGo8.mkv", clip_bytes)
    put_video(tmp_path / "data" / "Ab-_12345xy.mp4", clip_bytes)
    put_video(tmp_path / "data" / "Ab-_12345xy.mkv", clip_bytes)  # mp4 is tried first
    samples = load_videomme(tmp_path)
    assert [s.sample_id for s in samples] == [
        "Action Recognition/001-1",
        "Action Recognition/001-3",
        "Spatial Perception/001-2",
    ]
    first = samples[0]
    assert first.candidates == ("red", "green", "blue", "black")
    assert (first.answer_index, first.answer_letter, first.answer) == (2, "C", "blue")
    assert first.option_format == "dot"
    assert first.formatted_options == ("A. red", "B. green", "C. blue", "D. black")
    assert first.video_path == tmp_path / "data" / "fFjv93ACGo8.mkv"
    assert samples[2].video_path == tmp_path / "data" / "Ab-_12345xy.mp4"
    assert samples[2].answer_letter == "A"
    assert dict(first.extra)["duration"] == "short"
    # No file with any extension: the mp4 path is kept and decoding names it.
    assert samples[1].video_path == tmp_path / "data" / "zzzzzzzzzzz.mp4"
    with pytest.raises(DataError, match="does not exist") as info:
        read_frames(samples[1])
    assert_located(info, samples[1].video_path, "Action Recognition/001-3")
    assert read_frames(first).frames.shape == (8, 32, 32, 3)


@pytest.mark.parametrize(
    ("url", "video_id"),
    [
        ("https://www.youtube.com/watch?v=fFjv93ACGo8", "fFjv93ACGo8"),
        ("https://youtube.com/watch?feature=share&v=fFjv93ACGo8", "fFjv93ACGo8"),
        ("https://youtu.be/fFjv93ACGo8?t=3", "fFjv93ACGo8"),
        ("https://www.youtube.com/shorts/fFjv93ACGo8", "fFjv93ACGo8"),
        ("https://example.com/watch?v=fFjv93ACGo8", None),
        ("https://www.youtube.com/watch?v=", None),
    ],
)
def test_youtube_video_id(url, video_id):
    assert youtube_video_id(url) == video_id


VIDEOMME_BAD = {
    "answer not an option letter": ({"answer": "E"}, "answer", "'A', 'B', 'C', 'D'"),
    "answer is a word": ({"answer": "blue"}, "answer", "option letters"),
    "option letter out of order": (
        {"options": ["B. red", "A. green", "C. blue", "D. black"]},
        "options",
        "option 0 must start with 'A. '",
    ),
    "option without letter": ({"options": ["red", "green"]}, "options", "option 0"),
    "url without video id": ({"url": "https://example.com/video"}, "url", "YouTube video id"),
    "question missing": ({"question": None}, "question", "string"),
}


@pytest.mark.parametrize("case", list(VIDEOMME_BAD))
def test_videomme_bad_row_names_file_row_and_field(tmp_path, case):
    changes, field, detail = VIDEOMME_BAD[case]
    path = write_videomme(tmp_path, [videomme_row(1, **changes)])
    with pytest.raises(DataError) as info:
        load_videomme(tmp_path)
    assert_located(info, path, "row 0", detail, field=field)


def test_videomme_missing_column_and_corrupt_file(tmp_path):
    row = videomme_row(1)
    del row["task_type"]
    path = write_videomme(tmp_path, [row])
    with pytest.raises(DataError, match="missing required column") as info:
        load_videomme(tmp_path)
    assert_located(info, path, field="task_type")
    path.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(DataError, match="cannot read parquet") as info:
        load_videomme(tmp_path)
    assert_located(info, path)


def test_videomme_duplicate_question_ids_and_unknown_task(tmp_path):
    path = write_videomme(tmp_path, [videomme_row(1), videomme_row(1)])
    with pytest.raises(DataError, match="duplicate sample id") as info:
        load_videomme(tmp_path)
    assert_located(info, path, "Action Recognition/001-1", "row 0", "row 1", field="sample_id")
    write_videomme(tmp_path, [videomme_row(1), videomme_row(2, task="OCR Problems")])
    with pytest.raises(DataError) as info:
        load_videomme(tmp_path, tasks=["Counting"])
    assert_located(info, path, "'Counting'", "Action Recognition, OCR Problems", field="tasks")


# --- VCGBench ---------------------------------------------------------------------------


def test_vcgbench_free_form_samples(tmp_path, clip_bytes):
    write_vcg(
        tmp_path,
        {
            "temporal_qa": [vcg_entry(0), vcg_entry(1)],
            "consistency_qa": [{"Q1": "What colour?", "Q2": "Which colour?", "A": "Red.", "video_name": "v_c"}],
        },
        clip_bytes,
        ext="mkv",
    )
    samples = load_vcgbench(tmp_path)  # temporal_qa by default
    assert [s.sample_id for s in samples] == ["temporal_qa/0000", "temporal_qa/0001"]
    first = samples[0]
    assert first.is_free_form and first.candidates == () and first.answer_index == NO_ANSWER_INDEX
    assert (first.question, first.reference_answer) == ("What happens after step 0?", "The man jumps 0.")
    assert first.video_path == tmp_path / "Test_Videos" / "v_0.mkv"
    assert read_frames(first).frames.shape == (8, 32, 32, 3)

    pair = load_vcgbench(tmp_path, tasks=["consistency_qa"])
    assert [s.sample_id for s in pair] == ["consistency_qa/0000/Q1", "consistency_qa/0000/Q2"]
    assert [s.question for s in pair] == ["What colour?", "Which colour?"]
    assert {s.reference_answer for s in pair} == {"Red."}
    assert dict(pair[1].extra)["question_key"] == "Q2"


@pytest.mark.parametrize("accessor", ["answer", "answer_letter", "option_letters", "formatted_options"])
def test_free_form_sample_refuses_multiple_choice_access(tmp_path, accessor):
    write_vcg(tmp_path, {"temporal_qa": [vcg_entry(0)]})
    (sample,) = load_vcgbench(tmp_path)
    with pytest.raises(DataError, match="free-form") as info:
        getattr(sample, accessor)
    assert "temporal_qa/0000" in str(info.value) and "temporal_qa.json" in str(info.value)


def test_vcgbench_limit_keeps_consistency_pairs_whole(tmp_path):
    entries = [{"Q1": f"a{i}?", "Q2": f"b{i}?", "A": "x", "video_name": f"v{i}"} for i in range(10)]
    write_vcg(tmp_path, {"consistency_qa": entries})
    samples = load_vcgbench(tmp_path, tasks="consistency_qa", limit=3, seed=5)
    kept = select_entry_indices(10, 3, 5)
    assert [s.sample_id for s in samples] == [f"consistency_qa/{i:04d}/{q}" for i in kept for q in ("Q1", "Q2")]


VCG_BAD = {
    "missing answer": (lambda e: e.pop("A"), "A", "missing"),
    "missing question": (lambda e: e.pop("Q"), "Q", "Q1"),
    "half a pair": (lambda e: (e.pop("Q"), e.update(Q1="a?")), "Q2", "missing"),
    "video name with folder": (lambda e: e.update(video_name="x/y"), "video_name", "plain name"),
    "empty answer": (lambda e: e.update(A=" "), "A", "non-empty"),
}


@pytest.mark.parametrize("case", list(VCG_BAD))
def test_vcgbench_bad_entry_names_file_entry_and_field(tmp_path, case):
    mutate, field, detail = VCG_BAD[case]
    bad = vcg_entry(1)
    mutate(bad)
    path = write_vcg(tmp_path, {"temporal_qa": [vcg_entry(0), bad]}) / "Benchmarking_QA" / "temporal_qa.json"
    with pytest.raises(DataError) as info:
        load_vcgbench(tmp_path)
    assert_located(info, path, "temporal_qa/0001", "entry 1", detail, field=field)


# --- shared loader behaviour ------------------------------------------------------------

# name -> (write a layout with `count` samples in one task, the task name, file that holds them)
LAYOUTS = {
    "tomato": (
        lambda root, count: write_tomato(root, {"count": {f"e{i}": tomato_entry(f"k{i}") for i in range(count)}}),
        "Count",
        Path("jsons/count.json"),
    ),
    "longvideobench": (
        lambda root, count: write_lvb(root, [lvb_entry(i) for i in range(count)]),
        "T3O",
        Path("lvb_val.json"),
    ),
    "videomme": (
        lambda root, count: write_videomme(root, [videomme_row(i) for i in range(count)]),
        "Action Recognition",
        Path("videomme/test-00000-of-00001.parquet"),
    ),
    "vcgbench": (
        lambda root, count: write_vcg(root, {"temporal_qa": [vcg_entry(i) for i in range(count)]}),
        "temporal_qa",
        Path("Benchmarking_QA/temporal_qa.json"),
    ),
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_limit_is_a_seeded_subset_in_file_order(tmp_path, name):
    write, task, _ = LAYOUTS[name]
    write(tmp_path, 20)
    everything = read_benchmark(name, tmp_path)
    subset = read_benchmark(name, tmp_path, limit=5, seed=7)
    assert subset == read_benchmark(name, tmp_path, limit=5, seed=7)
    assert subset == [everything[i] for i in select_entry_indices(20, 5, 7)]
    assert subset != read_benchmark(name, tmp_path, limit=5, seed=8)
    assert {s.task for s in subset} == {task}
    assert len(read_benchmark(name, tmp_path, limit=100)) == 20
    with pytest.raises(ValueError, match="limit"):
        read_benchmark(name, tmp_path, limit=0)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_missing_root_and_question_file(tmp_path, name):
    write, _, relative = LAYOUTS[name]
    with pytest.raises(DataError, match="root directory does not exist") as info:
        read_benchmark(name, tmp_path / "nowhere")
    assert "nowhere" in str(info.value)
    write(tmp_path, 1)
    (tmp_path / relative).unlink()
    with pytest.raises(DataError) as info:
        read_benchmark(name, tmp_path)
    message = str(info.value)
    assert str(tmp_path / relative.parent) in message and relative.name in message


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_unknown_task_lists_valid_names(tmp_path, name):
    write, task, _ = LAYOUTS[name]
    write(tmp_path, 2)
    with pytest.raises(DataError, match="unknown") as info:
        read_benchmark(name, tmp_path, tasks=[task, "fly_fishing"])
    assert "fly_fishing" in str(info.value) and task in str(info.value)
    assert info.value.field == "tasks"


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_task_listed_twice_is_a_duplicate_id(tmp_path, name):
    write, task, relative = LAYOUTS[name]
    write(tmp_path, 1)
    with pytest.raises(DataError, match="duplicate sample id") as info:
        read_benchmark(name, tmp_path, tasks=[task, task])
    assert info.value.field == "sample_id" and task in str(info.value)


@pytest.mark.parametrize("name", ["tomato", "longvideobench", "vcgbench"])
def test_invalid_json_reports_file_and_position(tmp_path, name):
    write, _, relative = LAYOUTS[name]
    write(tmp_path, 1)
    (tmp_path / relative).write_text('[\n  {"a": 1,\n  oops\n]', encoding="utf-8")
    with pytest.raises(DataError, match="invalid JSON") as info:
        read_benchmark(name, tmp_path)
    assert_located(info, tmp_path / relative, "line 3")


@pytest.mark.parametrize("name", ["longvideobench", "vcgbench"])
def test_json_list_required(tmp_path, name):
    write, _, relative = LAYOUTS[name]
    write(tmp_path, 1)
    write_json(tmp_path / relative, {"not": "a list"})
    with pytest.raises(DataError, match="JSON list") as info:
        read_benchmark(name, tmp_path)
    assert_located(info, tmp_path / relative)


def test_duplicate_key_inside_an_entry(tmp_path):
    path = tmp_path / "lvb_val.json"
    entry = json.dumps(lvb_entry(0))[:-1] + ', "correct_choice": 1}'
    path.write_text(f"[{entry}]", encoding="utf-8")
    with pytest.raises(DataError, match="twice") as info:
        load_longvideobench(tmp_path)
    assert_located(info, path, "entry 0", field="correct_choice")


# --- decoding errors for loaded samples ---------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "zero bytes", "corrupt", "too short"])
def test_bad_video_names_file_and_sample(tmp_path, clip_bytes, kind):
    write_tomato(tmp_path, {"count": {"c1": tomato_entry("k1")}})
    (sample,) = load_tomato(tmp_path)
    details = {
        "missing": "does not exist",
        "zero bytes": "0 bytes",
        "corrupt": "cannot decode",
        "too short": "16 frames, fewer than the 24 requested",
    }
    if kind == "zero bytes":
        put_video(sample.video_path, b"")
    elif kind == "corrupt":
        put_video(sample.video_path, clip_bytes[: len(clip_bytes) // 3])
    elif kind == "too short":
        put_video(sample.video_path, clip_bytes)
    with pytest.raises(DataError) as info:
        read_frames(sample, num_frames=24 if kind == "too short" else 8)
    assert_located(info, sample.video_path, "Count/c1", details[kind], field="video")


def test_clip_bound_outside_the_video(tmp_path, clip_bytes):
    write_tomato(tmp_path, {"count": {"c1": tomato_entry("k1")}}, clip_bytes)
    (sample,) = load_tomato(tmp_path)
    with pytest.raises(DataError, match="after the last frame") as info:
        read_frames(dataclasses.replace(sample, start=3.0, end=4.0))
    assert_located(info, sample.video_path, "Count/c1", field="start")


# --- frame rules against the spec's formulas ----------------------------------------------


def spec_segment_midpoint(n: int, fps: float, t: int, start=None, end=None) -> list[int]:
    start_idx = 0 if start is None else max(0, round(start * fps))
    end_idx = n - 1 if end is None else min(round(end * fps), n - 1)
    seg = (end_idx - start_idx) / t
    return [int(start_idx + seg / 2 + np.round(seg * i)) for i in range(t)]


def spec_linspace(n: int, t: int) -> list[int]:
    return np.linspace(0, n - 1, t, dtype=int).tolist()


def spec_longvideobench(duration: float, fps: float, t: int) -> list[int]:
    count = min(t, int(duration))
    indices = [int(int(duration * fps) / count) * i for i in range(count)]
    return indices + [indices[-1]] * (t - count)


@pytest.mark.parametrize("num_video_frames", [8, 9, 16, 21, 100, 1001, 13_678])
@pytest.mark.parametrize("num_frames", [1, 4, 8])
def test_rules_match_the_spec_formulas(num_video_frames, num_frames):
    fps = 30.0
    assert frame_indices(num_video_frames, fps, num_frames).tolist() == spec_segment_midpoint(
        num_video_frames, fps, num_frames
    )
    assert frame_indices(num_video_frames, fps, num_frames, rule="linspace").tolist() == spec_linspace(
        num_video_frames, num_frames
    )
    duration = num_video_frames / fps
    if int(duration) >= 1:
        assert frame_indices(num_video_frames, fps, num_frames, rule="longvideobench", duration=duration).tolist() == (
            spec_longvideobench(duration, fps, num_frames)
        )


def test_segment_midpoint_with_clip_matches_the_spec():
    assert frame_indices(300, 30.0, 8, start=1.25, end=7.9).tolist() == spec_segment_midpoint(300, 30.0, 8, 1.25, 7.9)


@pytest.mark.parametrize(
    ("num_video_frames", "fps", "num_frames", "duration", "expected"),
    [
        # total=int(10.5*8)=84, n=min(8,10)=8, step=int(84/8)=10.
        (1000, 8.0, 8, 10.5, [0, 10, 20, 30, 40, 50, 60, 70]),
        # total=int(5.9*10)=59, n=min(8,5)=5, step=int(59/5)=11; padded with 44.
        (1000, 10.0, 8, 5.9, [0, 11, 22, 33, 44, 44, 44, 44]),
        # total=int(455.92*30)=13677, n=24, step=int(13677/24)=569.
        (13_678, 30.0, 24, 455.92, [569 * i for i in range(24)]),
        # duration None = the video's own: 16 frames / 8 fps = 2 s -> n=2, step=8.
        (16, 8.0, 4, None, [0, 8, 8, 8]),
        # under 1 s the original divides by zero; here frame 0 is repeated.
        (16, 30.0, 3, 0.5, [0, 0, 0]),
    ],
)
def test_longvideobench_rule_hand_computed(num_video_frames, fps, num_frames, duration, expected):
    assert longvideobench_indices(num_video_frames, fps, num_frames, duration).tolist() == expected


def test_longvideobench_rule_rejects_a_duration_past_the_video_and_clip_bounds():
    with pytest.raises(DataError, match="past the last frame") as info:
        longvideobench_indices(100, 10.0, 8, duration=60.0)
    assert info.value.field == "duration"
    with pytest.raises(ValueError, match="no clip bound"):
        frame_indices(100, 10.0, 8, start=1.0, rule="longvideobench", duration=5.0)


def test_rule_names():
    assert FRAME_RULES == ("segment_midpoint", "linspace", "longvideobench")


# --- decode timeout ---------------------------------------------------------------------


def test_decode_timeout_names_file_and_sample(tmp_path, clip_bytes, monkeypatch):
    path = put_video(tmp_path / "slow.mp4", clip_bytes)
    sample = Sample("Count/slow", "Count", path, "q", ("a", "b"), 0)
    release = threading.Event()

    def stuck_decoder(*args, **kwargs):
        release.wait(10)
        raise RuntimeError("released")

    monkeypatch.setattr(video, "_decode", stuck_decoder)
    try:
        with pytest.raises(DataError, match="did not finish within 0.05 s") as info:
            read_frames(sample, timeout_s=0.05)
        assert_located(info, path, "Count/slow", field="video")
    finally:
        release.set()


def test_decode_timeout_passes_results_and_errors_through(tmp_path, clip_bytes):
    path = put_video(tmp_path / "ok.mp4", clip_bytes)
    sample = Sample("Count/ok", "Count", path, "q", ("a", "b"), 0)
    threaded = read_frames(sample, timeout_s=30)
    inline = read_frames(sample, timeout_s=None)
    assert np.array_equal(threaded.frames, inline.frames)
    with pytest.raises(DataError, match="fewer than"):
        read_frames(sample, num_frames=20, timeout_s=30)  # raised in the worker thread
    with pytest.raises(ValueError, match="timeout_s"):
        read_frames(sample, timeout_s=0)


# --- frame cache ------------------------------------------------------------------------


@pytest.fixture
def counted_decodes(monkeypatch) -> list[Path]:
    """Paths the real decoder was asked for, in order (a cache hit adds nothing)."""
    calls: list[Path] = []
    real = video._decode

    def counting(path, *args, **kwargs):
        calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(video, "_decode", counting)
    return calls


def cache_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.npz"))


def test_cache_miss_hit_and_separate_keys(tmp_path, clip_bytes, counted_decodes):
    path = put_video(tmp_path / "v.mp4", clip_bytes)
    cache_dir = tmp_path / "cache"
    sample = Sample("Count/v", "Count", path, "q", ("a", "b"), 0)
    first = read_frames(sample, cache_dir=cache_dir)
    second = read_frames(sample, cache_dir=cache_dir)
    assert len(counted_decodes) == 1 and len(cache_files(cache_dir)) == 1
    assert np.array_equal(first.frames, second.frames) and np.array_equal(first.indices, second.indices)
    assert (second.fps, second.num_video_frames) == (first.fps, first.num_video_frames)
    read_frames(sample, num_frames=4, cache_dir=cache_dir)
    read_frames(sample, rule="linspace", cache_dir=cache_dir)
    assert len(counted_decodes) == 3 and len(cache_files(cache_dir)) == 3
    assert not list(cache_dir.glob(".tmp-*"))  # no leftovers from the atomic writes


def test_cache_invalidated_when_the_video_changes(tmp_path, clip_bytes, counted_decodes):
    path = put_video(tmp_path / "v.mp4", clip_bytes)
    read_frames(Sample("a/1", "a", path, "q", ("x",), 0), cache_dir=tmp_path / "c")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    read_frames(Sample("a/1", "a", path, "q", ("x",), 0), cache_dir=tmp_path / "c")
    assert len(counted_decodes) == 2 and len(cache_files(tmp_path / "c")) == 2


def test_corrupt_or_foreign_cache_file_is_ignored_and_rewritten(tmp_path, clip_bytes, counted_decodes):
    path = put_video(tmp_path / "v.mp4", clip_bytes)
    cache = FrameCache(tmp_path / "c")
    key = FrameCacheKey.for_file(path, "segment_midpoint", 8)
    good = read_frames(Sample("a/1", "a", path, "q", ("x",), 0), cache_dir=cache.directory)
    cache.path_for(key).write_bytes(b"garbage")
    assert cache.load(key) is None
    again = read_frames(Sample("a/1", "a", path, "q", ("x",), 0), cache_dir=cache.directory)
    assert len(counted_decodes) == 2 and np.array_equal(again.frames, good.frames)
    assert cache.load(key) is not None  # rewritten
    other = FrameCacheKey.for_file(path, "linspace", 8)
    shutil.copy(cache.path_for(key), cache.path_for(other))  # a file filed under the wrong key
    assert cache.load(other) is None


def test_cache_is_off_by_default_and_follows_the_environment(tmp_path, clip_bytes, monkeypatch, counted_decodes):
    path = put_video(tmp_path / "v.mp4", clip_bytes)
    sample = Sample("a/1", "a", path, "q", ("x",), 0)
    monkeypatch.delenv(frame_cache.CACHE_ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    read_frames(sample)
    assert not (tmp_path / "home").exists()
    read_frames(sample, cache_dir=True)
    assert len(cache_files(tmp_path / "home" / ".cache" / "mapflow" / "frames")) == 1
    monkeypatch.setenv(frame_cache.CACHE_ENV_VAR, str(tmp_path / "env-cache"))
    read_frames(sample)
    read_frames(sample)
    assert len(cache_files(tmp_path / "env-cache")) == 1 and len(counted_decodes) == 3
    read_frames(sample, cache_dir=False)
    assert len(counted_decodes) == 4


def test_unwritable_cache_warns_and_still_returns_frames(tmp_path, clip_bytes):
    path = put_video(tmp_path / "v.mp4", clip_bytes)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.warns(RuntimeWarning, match="could not write frame cache"):
        frames = read_frames(Sample("a/1", "a", path, "q", ("x",), 0), cache_dir=blocker / "cache")
    assert frames.frames.shape == (8, 32, 32, 3)


def test_cache_key_covers_duration_for_the_longvideobench_rule(tmp_path, clip_bytes, counted_decodes):
    path = put_video(tmp_path / "v.mp4", clip_bytes)
    sample = Sample("a/1", "a", path, "q", ("x",), 0, duration=2.0)
    a = read_frames(sample, rule="longvideobench", cache_dir=tmp_path / "c")
    b = read_frames(dataclasses.replace(sample, duration=1.0), rule="longvideobench", cache_dir=tmp_path / "c")
    assert a.indices.tolist() == [0, 8, 8, 8, 8, 8, 8, 8] and b.indices.tolist() == [0] * 8
    assert len(counted_decodes) == 2


# --- registry and Sample ----------------------------------------------------------------


def test_registry_defaults():
    assert list(BENCHMARKS) == ["tvbench", "tomato", "longvideobench", "videomme", "vcgbench"]
    assert all(b.frame_rule in FRAME_RULES and b.num_frames == 8 for b in BENCHMARKS.values())
    assert BENCHMARKS["longvideobench"].frame_rule == "longvideobench"
    assert BENCHMARKS["videomme"].frame_rule == "segment_midpoint"
    assert BENCHMARKS["vcgbench"].free_form and BENCHMARKS["tvbench"].loader is load_tvbench


def test_load_benchmark_dispatches_and_rejects_unknown_names(tmp_path):
    write_lvb(tmp_path, [lvb_entry(0, "T3O"), lvb_entry(1, "SOS")])
    assert [s.task for s in read_benchmark("longvideobench", tmp_path, tasks=["SOS"])] == ["SOS"]
    with pytest.raises(DataError) as info:
        read_benchmark("mvbench", tmp_path)
    assert "mvbench" in str(info.value) and all(name in str(info.value) for name in BENCHMARKS)


def test_sample_keeps_its_positional_fields_and_defaults():
    sample = Sample("t/0", "t", Path("v.mp4"), "q?", ("x", "y"), 1)
    assert (sample.option_format, sample.reference_answer, sample.duration, sample.extra) == ("paren", None, None, ())
    assert sample.answer == "y" and sample.option_letters == ("A", "B") and not sample.is_free_form
    assert dataclasses.replace(sample, option_format="dot").formatted_options == ("A. x", "B. y")
    with pytest.raises(DataError, match="option format"):
        _ = dataclasses.replace(sample, option_format="roman").formatted_options

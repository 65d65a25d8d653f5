"""Tests for the data-in layer: TVBench loading, frame index rules, decoding, synthetic data."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mapflow.data import (
    TVBENCH_TASKS,
    Sample,
    VideoFrames,
    check_videos_exist,
    load_tvbench,
    read_frames,
    segment_midpoint_indices,
)
from mapflow.data.tvbench import select_entry_indices
from mapflow.data.video import frame_indices, linspace_indices, read_frames_from_path
from mapflow.errors import DataError
from mapflow.organism.synthetic import (
    MOVING_DIRECTION_CANDIDATES,
    moving_square_frames,
    write_tiny_tvbench,
    write_video,
)
from mapflow.organism.synthetic import main as synthetic_main

REPO_ROOT = Path(__file__).resolve().parents[1]


# --- fixtures and helpers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """A generated dataset shared by read-only tests (never modify it)."""
    return write_tiny_tvbench(tmp_path_factory.mktemp("tiny"), per_task=4, seed=0)


def good_entry(video: str = "clip.mp4") -> dict:
    return {
        "video": video,
        "question": "What happens?",
        "candidates": ["Alpha.", "Beta.", "Gamma."],
        "answer": "Beta.",
    }


def write_task_json(root: Path, task: str, entries) -> Path:
    json_dir = root / "json"
    json_dir.mkdir(parents=True, exist_ok=True)
    path = json_dir / f"{task}.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def make_sample(video_path: Path, sample_id: str = "action_count/0007", start=None, end=None) -> Sample:
    return Sample(
        sample_id=sample_id,
        task=sample_id.split("/")[0],
        video_path=video_path,
        question="q",
        candidates=("a", "b"),
        answer_index=0,
        start=start,
        end=end,
        source="test",
    )


def square_centroid(frame: np.ndarray) -> np.ndarray:
    """(x, y) centre of the pixels that differ clearly from the grey background."""
    background = np.median(frame.reshape(-1, 3), axis=0)
    mask = np.abs(frame.astype(int) - background).sum(axis=-1) > 90
    ys, xs = np.nonzero(mask)
    assert len(xs) > 0, "no square found in frame"
    return np.array([xs.mean(), ys.mean()])


# --- frame index rules ------------------------------------------------------------------


def test_segment_midpoint_without_bound():
    # n=16, T=8: seg=15/8=1.875; int(0.9375 + round(1.875*i)); round(7.5)=8.
    assert segment_midpoint_indices(16, fps=8.0).tolist() == [0, 2, 4, 6, 8, 9, 11, 13]


def test_segment_midpoint_rounds_half_to_even():
    # n=21, T=8: seg=2.5; round(2.5)=2 and round(12.5)=12 (half-up would give 4 and 14).
    assert segment_midpoint_indices(21, fps=1.0).tolist() == [1, 3, 6, 9, 11, 13, 16, 19]


def test_segment_midpoint_with_bound():
    # Clip 2 s..5 s at 10 fps -> frames 20..50, seg=3.75, offset 1.875.
    indices = segment_midpoint_indices(100, fps=10.0, num_frames=8, start=2.0, end=5.0)
    assert indices.tolist() == [21, 25, 29, 32, 36, 40, 43, 47]
    assert indices.dtype == np.int64


def test_segment_midpoint_bound_rounding_and_clamping():
    # start: round(22.5)=22 (half-to-even); end 20 s is clamped to the last frame 99.
    # seg=77/8=9.625; round(38.5)=38 at i=4.
    indices = segment_midpoint_indices(100, fps=10.0, num_frames=8, start=2.25, end=20.0)
    assert indices.tolist() == [26, 36, 45, 55, 64, 74, 84, 93]


def test_segment_midpoint_other_frame_count():
    # n=10, T=4: seg=9/4=2.25; int(1.125 + round(2.25*i)) with round(4.5)=4.
    assert segment_midpoint_indices(10, fps=1.0, num_frames=4).tolist() == [1, 3, 5, 8]


def test_linspace_indices():
    assert linspace_indices(16, 8).tolist() == [0, 2, 4, 6, 8, 10, 12, 15]
    assert np.array_equal(linspace_indices(37, 5), np.linspace(0, 36, 5, dtype=int))


def test_linspace_rule_stays_inside_the_clip():
    indices = frame_indices(100, fps=10.0, num_frames=4, start=2.0, end=5.0, rule="linspace")
    assert indices.tolist() == [20, 30, 40, 50]


@pytest.mark.parametrize(("start", "end", "field"), [(5.0, 6.0, "start"), (3.0, None, "start")])
def test_clip_bound_outside_the_video_raises(start, end, field):
    with pytest.raises(DataError) as info:
        segment_midpoint_indices(16, fps=8.0, start=start, end=end)
    assert f"field '{field}'" in str(info.value)


def test_unknown_rule_is_rejected():
    with pytest.raises(ValueError, match="segment_midpoint"):
        frame_indices(16, 8.0, rule="middle")


# --- loader: happy path -----------------------------------------------------------------


def test_tvbench_tasks_are_the_ten_sorted_stems():
    assert len(TVBENCH_TASKS) == 10
    assert list(TVBENCH_TASKS) == sorted(TVBENCH_TASKS)
    assert "moving_direction" in TVBENCH_TASKS and "scene_transition" in TVBENCH_TASKS


def test_load_generated_dataset(tiny_root):
    samples = load_tvbench(tiny_root)
    assert [s.sample_id for s in samples] == [
        *(f"moving_direction/{i:04d}" for i in range(4)),
        *(f"scene_transition/{i:04d}" for i in range(4)),
    ]
    entries = json.loads((tiny_root / "json" / "moving_direction.json").read_text())
    first = samples[0]
    assert first.task == "moving_direction"
    assert first.video_path == tiny_root / "video" / "moving_direction" / entries[0]["video"]
    assert first.question == entries[0]["question"]
    assert first.candidates == MOVING_DIRECTION_CANDIDATES
    assert first.answer == entries[0]["answer"]
    assert first.start is None and first.end is None
    assert first.source == f"{tiny_root / 'json' / 'moving_direction.json'}[entry 0]"
    assert check_videos_exist(samples) == []


def test_load_selected_task_and_clip_bounds(tmp_path):
    entry = good_entry() | {"start": 1, "end": 2.5}
    write_task_json(tmp_path, "action_localization", [entry])
    write_task_json(tmp_path, "action_count", [good_entry()])
    (sample,) = load_tvbench(tmp_path, tasks=["action_localization"])
    assert (sample.start, sample.end) == (1.0, 2.5)
    assert sample.answer_index == 1 and sample.answer_letter == "B"
    assert [s.task for s in load_tvbench(tmp_path)] == ["action_count", "action_localization"]


def test_limit_is_seeded_reproducible_and_keeps_file_order(tmp_path):
    write_task_json(tmp_path, "action_count", [good_entry(f"{i}.mp4") for i in range(20)])
    first = load_tvbench(tmp_path, limit=5, seed=7)
    again = load_tvbench(tmp_path, limit=5, seed=7)
    assert first == again
    expected = sorted(random.Random(7).sample(range(20), 5))
    assert [s.sample_id for s in first] == [f"action_count/{i:04d}" for i in expected]
    assert select_entry_indices(20, 5, 7) == expected
    other_seed = load_tvbench(tmp_path, limit=5, seed=8)
    assert [s.sample_id for s in other_seed] != [s.sample_id for s in first]
    assert len(load_tvbench(tmp_path, limit=100)) == 20


def test_limit_must_be_positive(tmp_path):
    write_task_json(tmp_path, "action_count", [good_entry()])
    with pytest.raises(ValueError, match="limit"):
        load_tvbench(tmp_path, limit=0)


# --- loader: bad input ------------------------------------------------------------------


def _drop(field):
    def mutate(entry):
        del entry[field]

    return mutate


def _set(field, value):
    def mutate(entry):
        entry[field] = value

    return mutate


BAD_ENTRIES = {
    "missing video": (_drop("video"), "video", "missing"),
    "missing question": (_drop("question"), "question", "missing"),
    "missing candidates": (_drop("candidates"), "candidates", "missing"),
    "missing answer": (_drop("answer"), "answer", "missing"),
    "video not str": (_set("video", 3), "video", "string"),
    "empty video": (_set("video", ""), "video", "non-empty"),
    "question not str": (_set("question", None), "question", "string"),
    "candidates not list": (_set("candidates", "Alpha."), "candidates", "list"),
    "candidate not str": (_set("candidates", ["Alpha.", 2]), "candidates", "candidate 1"),
    "empty candidates": (_set("candidates", []), "candidates", "empty"),
    "duplicate candidates": (_set("candidates", ["Beta.", "Beta."]), "candidates", "duplicate"),
    "answer not str": (_set("answer", 1), "answer", "string"),
    "answer not a candidate": (_set("answer", "Delta."), "answer", "'Alpha.', 'Beta.', 'Gamma.'"),
    "start not number": (_set("start", "1.0"), "start", "number"),
    "start bool": (_set("start", True), "start", "number"),
    "negative start": (_set("start", -1.0), "start", "negative"),
    "negative end": (_set("end", -0.5), "end", "negative"),
    "start after end": (lambda e: e.update(start=4.0, end=2.0), "start", "after end"),
}


@pytest.mark.parametrize("case", list(BAD_ENTRIES))
def test_bad_entry_names_file_entry_and_field(tmp_path, case):
    mutate, field, detail = BAD_ENTRIES[case]
    bad = good_entry("b.mp4")
    mutate(bad)
    json_path = write_task_json(tmp_path, "object_count", [good_entry("a.mp4"), bad])
    with pytest.raises(DataError) as info:
        load_tvbench(tmp_path)
    message = str(info.value)
    assert str(json_path) in message
    assert "object_count/0001" in message and "entry 1" in message
    assert f"field '{field}'" in message
    assert detail in message
    assert info.value.field == field and info.value.file == str(json_path)


def test_entry_that_is_not_an_object(tmp_path):
    json_path = write_task_json(tmp_path, "object_count", [good_entry(), ["not", "a", "dict"]])
    with pytest.raises(DataError, match="JSON object") as info:
        load_tvbench(tmp_path)
    assert str(json_path) in str(info.value) and "entry 1" in str(info.value)


def test_invalid_json_reports_position(tmp_path):
    json_dir = tmp_path / "json"
    json_dir.mkdir()
    (json_dir / "action_count.json").write_text('[\n  {"video": "a.mp4",\n  oops\n]')
    with pytest.raises(DataError) as info:
        load_tvbench(tmp_path)
    message = str(info.value)
    assert "action_count.json" in message and "invalid JSON" in message and "line 3" in message


def test_top_level_must_be_a_list(tmp_path):
    write_task_json(tmp_path, "action_count", {"video": "a.mp4"})
    with pytest.raises(DataError, match="JSON list") as info:
        load_tvbench(tmp_path)
    assert "action_count.json" in str(info.value)


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="does not exist") as info:
        load_tvbench(tmp_path / "nowhere")
    assert "nowhere" in str(info.value)


def test_missing_json_dir(tmp_path):
    (tmp_path / "video").mkdir()
    with pytest.raises(DataError, match="'json/'"):
        load_tvbench(tmp_path)


def test_json_dir_without_task_files(tmp_path):
    write_task_json(tmp_path, "not_a_task", [good_entry()])
    with pytest.raises(DataError, match="no TVBench task JSON") as info:
        load_tvbench(tmp_path)
    assert "not_a_task.json" in str(info.value)


def test_requested_task_without_json(tmp_path):
    write_task_json(tmp_path, "action_count", [good_entry()])
    with pytest.raises(DataError, match="object_shuffle.json"):
        load_tvbench(tmp_path, tasks=["object_shuffle"])


def test_unknown_task_lists_valid_names(tmp_path):
    write_task_json(tmp_path, "action_count", [good_entry()])
    with pytest.raises(DataError) as info:
        load_tvbench(tmp_path, tasks=["action_count", "fly_fishing"])
    message = str(info.value)
    assert "fly_fishing" in message
    assert all(task in message for task in TVBENCH_TASKS)


def test_duplicate_sample_ids(tmp_path):
    write_task_json(tmp_path, "action_count", [good_entry()])
    with pytest.raises(DataError, match="duplicate sample id") as info:
        load_tvbench(tmp_path, tasks=["action_count", "action_count"])
    message = str(info.value)
    assert "action_count.json" in message and "action_count/0000" in message
    assert "field 'sample_id'" in message


def test_missing_videos_are_reported_not_raised(tmp_path):
    write_task_json(tmp_path, "action_count", [good_entry("gone.mp4"), good_entry("empty.mp4")])
    video_dir = tmp_path / "video" / "action_count"
    video_dir.mkdir(parents=True)
    (video_dir / "empty.mp4").touch()
    samples = load_tvbench(tmp_path)
    problems = check_videos_exist(samples)
    assert [(s.sample_id, reason.split()[-1]) for s, reason in problems] == [
        ("action_count/0000", "exist"),
        ("action_count/0001", "bytes)"),
    ]


# --- decoding ---------------------------------------------------------------------------


def test_read_frames_shape_dtype_and_indices(tiny_root):
    sample = load_tvbench(tiny_root)[0]
    video = read_frames(sample)
    assert isinstance(video, VideoFrames)
    assert video.frames.shape == (8, 64, 64, 3) and video.frames.dtype == np.uint8
    assert video.indices.tolist() == [0, 2, 4, 6, 8, 9, 11, 13]
    assert video.num_video_frames == 16 and video.fps == pytest.approx(8.0)
    assert read_frames(sample, num_frames=4, rule="linspace").indices.tolist() == [0, 5, 10, 15]


def test_read_frames_uses_the_clip_bound(tiny_root):
    path = tiny_root / "video" / "moving_direction" / "moving_direction_0000.mp4"
    # 0.5 s..1.5 s at 8 fps -> frames 4..12, seg=1 -> int(4.5 + i).
    video = read_frames(make_sample(path, start=0.5, end=1.5))
    assert video.indices.tolist() == [4, 5, 6, 7, 8, 9, 10, 11]
    with pytest.raises(DataError) as info:
        read_frames(make_sample(path, start=10.0, end=12.0))
    message = str(info.value)
    assert path.name in message and "action_count/0007" in message and "field 'start'" in message


def _assert_video_error(error: pytest.ExceptionInfo, path: Path, *details: str) -> None:
    message = str(error.value)
    assert path.name in message
    assert "action_count/0007" in message
    assert "field 'video'" in message
    for detail in details:
        assert detail in message


def test_missing_video_file(tmp_path):
    path = tmp_path / "missing.mp4"
    with pytest.raises(DataError) as info:
        read_frames(make_sample(path))
    _assert_video_error(info, path, "does not exist")


def test_zero_byte_video_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.touch()
    with pytest.raises(DataError) as info:
        read_frames(make_sample(path))
    _assert_video_error(info, path, "0 bytes")


@pytest.mark.parametrize("kind", ["random bytes", "truncated mp4"])
def test_undecodable_video_file(tmp_path, tiny_root, kind):
    path = tmp_path / "corrupt.mp4"
    if kind == "random bytes":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    else:
        good = (tiny_root / "video" / "scene_transition" / "scene_transition_0000.mp4").read_bytes()
        path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError) as info:
        read_frames(make_sample(path))
    _assert_video_error(info, path, "decord", "PyAV")


def test_fewer_frames_than_requested(tmp_path):
    path = write_video(tmp_path / "short.mp4", np.zeros((4, 32, 32, 3), dtype=np.uint8), fps=8)
    with pytest.raises(DataError) as info:
        read_frames(make_sample(path), num_frames=8)
    _assert_video_error(info, path, "4 frames", "8 requested")
    assert read_frames(make_sample(path), num_frames=4).frames.shape == (4, 32, 32, 3)


def test_pyav_fallback_matches_decord(tiny_root, monkeypatch):
    import decord

    path = tiny_root / "video" / "moving_direction" / "moving_direction_0002.mp4"
    with_decord = read_frames_from_path(path, num_frames=8)

    def broken_reader(*args, **kwargs):
        raise RuntimeError("decord disabled by test")

    monkeypatch.setattr(decord, "VideoReader", broken_reader)
    with_pyav = read_frames_from_path(path, num_frames=8)
    assert with_pyav.frames.shape == with_decord.frames.shape
    assert with_pyav.frames.dtype == np.uint8
    assert np.array_equal(with_pyav.indices, with_decord.indices)
    assert (with_pyav.num_video_frames, with_pyav.fps) == (16, pytest.approx(8.0))
    # Both wrap FFmpeg's decoder; allow a little slack for colour conversion differences.
    assert np.abs(with_pyav.frames.astype(int) - with_decord.frames.astype(int)).max() <= 2


# --- synthetic generator ----------------------------------------------------------------


def _json_texts(root: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((root / "json").glob("*.json"))}


def test_generator_is_deterministic(tmp_path, tiny_root):
    again = write_tiny_tvbench(tmp_path / "again", per_task=4, seed=0)
    assert _json_texts(again) == _json_texts(tiny_root)
    # Byte-identical videos: guards against encoder settings that are not reproducible.
    videos = sorted(p.relative_to(tiny_root) for p in (tiny_root / "video").rglob("*.mp4"))
    assert len(videos) == 8
    for relative in videos:
        assert (again / relative).read_bytes() == (tiny_root / relative).read_bytes(), relative
    other = write_tiny_tvbench(tmp_path / "other", per_task=4, seed=1)
    assert _json_texts(other) != _json_texts(tiny_root)


def test_generator_balances_answers(tmp_path):
    root = write_tiny_tvbench(tmp_path, per_task=8, seed=3, size=32, num_video_frames=8)
    samples = load_tvbench(root)
    directions = Counter(s.answer for s in samples if s.task == "moving_direction")
    assert directions == {candidate: 2 for candidate in MOVING_DIRECTION_CANDIDATES}
    positions = Counter(s.answer_index for s in samples if s.task == "scene_transition")
    assert positions == {0: 4, 1: 4}


def test_moving_square_moves_in_the_answered_direction(tiny_root):
    for sample in load_tvbench(tiny_root, tasks=["moving_direction"]):
        frames = read_frames(sample).frames
        dx, dy = square_centroid(frames[-1]) - square_centroid(frames[0])
        assert abs(dx) > 10 and abs(dy) > 10, sample.sample_id
        horizontal = "right" if dx > 0 else "left"
        vertical = "Down" if dy > 0 else "Up"
        assert sample.answer == f"{vertical} and to the {horizontal}.", sample.sample_id


def test_scene_changes_halfway(tiny_root):
    for sample in load_tvbench(tiny_root, tasks=["scene_transition"]):
        frames = read_frames(sample).frames.astype(int)
        assert np.abs(frames[0] - frames[3]).mean() < 3
        assert np.abs(frames[0] - frames[-1]).mean() > 20
        first, second = sample.answer.removeprefix("From the ").removesuffix(".").split(" to the ")
        assert first != second


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_written_video_decodes_with_decord_and_pyav(tmp_path, monkeypatch, codec):
    import decord

    frames = moving_square_frames("Down and to the right.", (220, 40, 40), 32, 8, np.random.default_rng(0))
    path = write_video(tmp_path / f"{codec}.mp4", frames, fps=8, codec=codec)
    # linspace: with as many video frames as requested it takes each frame once.
    with_decord = read_frames_from_path(path, num_frames=8, rule="linspace")
    monkeypatch.setattr(decord, "VideoReader", None)  # calling None fails -> PyAV
    with_pyav = read_frames_from_path(path, num_frames=8, rule="linspace")
    for decoded in (with_decord, with_pyav):
        assert decoded.indices.tolist() == list(range(8))
        assert np.abs(decoded.frames.astype(int) - frames.astype(int)).mean() < 6


def test_command_line_entry(tmp_path, capsys):
    synthetic_main([str(tmp_path / "cli"), "--per-task", "1", "--seed", "5"])
    assert "wrote 2 samples" in capsys.readouterr().out
    assert len(load_tvbench(tmp_path / "cli")) == 2


def test_shipped_mini_dataset_loads_and_matches_generator(tmp_path):
    shipped = REPO_ROOT / "data" / "tvbench-mini"
    samples = load_tvbench(shipped)
    assert len(samples) == 8 and check_videos_exist(samples) == []
    assert _json_texts(write_tiny_tvbench(tmp_path, per_task=4, seed=0)) == _json_texts(shipped)
    assert sum(p.stat().st_size for p in shipped.rglob("*") if p.is_file()) < 1_000_000


def test_data_package_does_not_import_torch():
    code = "import sys, mapflow.data, mapflow.organism.synthetic; sys.exit('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

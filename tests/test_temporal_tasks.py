"""Tests for the synthetic temporal benchmark: item logic, motion labels and the written files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mapflow.data import check_videos_exist, load_tvbench, read_frames
from mapflow.organism import temporal_tasks as tt
from mapflow.organism.synthetic import main as synthetic_main
from mapflow.organism.synthetic import pick_video_encoder, temporal_benchmark_entries, write_temporal_benchmark

ITEMS_PER_TASK = 200
# Decoded minus rendered pixels (libx264, yuv444p, qp 0): measured max 1 level; allow 2.
DECODE_TOLERANCE = 2
BENCHMARK_SEED = 1234


# --- helpers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def items_by_task() -> dict[str, list[tt.TemporalItem]]:
    rng = np.random.default_rng(7)
    return {task: [tt.make_item(task, rng) for _ in range(ITEMS_PER_TASK)] for task in tt.TASKS}


@pytest.fixture(scope="module")
def benchmark_root(tmp_path_factory) -> Path:
    """The full-size benchmark (40 per task), shared read-only."""
    return write_temporal_benchmark(tmp_path_factory.mktemp("temporal"), per_task=40, seed=BENCHMARK_SEED)


def color_mask(frame: np.ndarray, color: str) -> np.ndarray:
    """Pixels of exactly the named colour (rendered frames are exact)."""
    return np.all(frame == np.asarray(tt.COLORS[color], dtype=np.uint8), axis=-1)


def colors_in(frames: np.ndarray) -> list[str]:
    return [color for color in tt.COLORS if color_mask(frames, color).any()]


def object_changed(before: np.ndarray, after: np.ndarray, color: str) -> bool:
    return not np.array_equal(color_mask(before, color), color_mask(after, color))


def first_change_step(seen: np.ndarray, color: str) -> int:
    """First seen-frame step t (frame t-1 -> t) at which the object of `color` looks different."""
    for t in range(1, len(seen)):
        if object_changed(seen[t - 1], seen[t], color):
            return t
    raise AssertionError(f"the {color} object never changes")


def named_color(text: str) -> str:
    (color,) = [c for c in tt.COLORS if f" {c} " in f" {text} "]
    return color


def centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


# --- frames and determinism -------------------------------------------------------------


def test_seen_frames_are_the_odd_indices_and_closed_under_reversal():
    seen = tt.seen_frame_indices()
    assert seen.tolist() == list(range(1, 16, 2))
    assert sorted((tt.VIDEO_FRAMES - 1 - seen).tolist()) == seen.tolist()


def test_items_have_the_promised_shape(items_by_task):
    for task, items in items_by_task.items():
        for item in items[:20]:
            assert item.task == task
            assert item.frames.shape == (tt.VIDEO_FRAMES, tt.FRAME_SIZE, tt.FRAME_SIZE, 3)
            assert item.frames.dtype == np.uint8
            assert len(item.candidates) == tt.NUM_CANDIDATES[task] == len(set(item.candidates))
            assert item.seen_frames.shape[0] == 8


def test_same_seed_gives_same_items():
    for task in tt.TASKS:
        a = tt.make_item(task, np.random.default_rng(11))
        b = tt.make_item(task, np.random.default_rng(11))
        assert (a.question, a.candidates, a.answer_index) == (b.question, b.candidates, b.answer_index)
        assert np.array_equal(a.frames, b.frames)


# --- needing more than one frame --------------------------------------------------------


@pytest.mark.parametrize("task", tt.REVERSIBLE_TASKS)
def test_reversal_keeps_the_seen_frames_but_flips_the_answer(task):
    rng = np.random.default_rng(3)
    for _ in range(20):
        forward = tt.make_item(task, rng)
        backward = tt.reversed_item(forward)
        assert backward.answer_index != forward.answer_index
        # Same 8 frames in the opposite order: only their order tells the two answers apart.
        assert np.array_equal(backward.seen_frames, forward.seen_frames[::-1])
    for answer_index in range(tt.NUM_CANDIDATES[task]):
        assert tt.make_item(task, rng, reverse=True, answer_index=answer_index).answer_index == answer_index


@pytest.mark.parametrize("task", ["action_sequence", "object_count"])
def test_irreversible_tasks_refuse_reverse(task):
    with pytest.raises(ValueError, match="no reversed form"):
        tt.make_item(task, np.random.default_rng(0), reverse=True)


def test_action_sequence_answer_acts_first(items_by_task):
    for item in items_by_task["action_sequence"]:
        seen = item.seen_frames
        first = first_change_step(seen, named_color(item.answer))
        other = item.candidates[1 - item.answer_index]
        second = first_change_step(seen, named_color(other))
        assert first <= 4 < second, (item.candidates, item.answer, first, second)


def test_action_antonym_target_does_what_the_answer_says(items_by_task):
    presence = 0
    for item in items_by_task["action_antonym"]:
        masks = color_mask(item.seen_frames, named_color(item.question)).sum(axis=(1, 2))
        if item.answer == "It grows.":
            assert masks.min() > 0 and masks[-1] > masks[0]
        elif item.answer == "It shrinks.":
            assert masks.min() > 0 and masks[-1] < masks[0]
        else:
            presence += 1
            assert (masks[0] == 0) == (item.answer == "It appears.")
            assert (masks[-1] == 0) == (item.answer == "It disappears.")
    assert presence <= ITEMS_PER_TASK / 2  # presence is the one a single frame can reveal


def test_moving_direction_target_moves_in_the_answered_direction(items_by_task):
    for item in items_by_task["moving_direction"]:
        masks = color_mask(item.seen_frames, named_color(item.question))
        dx, dy = centroid(masks[-1]) - centroid(masks[0])
        assert abs(dx) >= 10 and abs(dy) >= 10
        expected = f"{'Down' if dy > 0 else 'Up'} and to the {'right' if dx > 0 else 'left'}."
        assert item.answer == expected


def test_object_count_matches_motion_at_the_start(items_by_task):
    for item in items_by_task["object_count"]:
        seen = item.seen_frames
        colors = colors_in(seen[:1])
        assert len(colors) == tt.COUNT_OBJECTS
        for step in (1, 2):  # both early steps agree: frames 1->3 and 3->5
            moving = [c for c in colors if object_changed(seen[step - 1], seen[step], c)]
            assert len(moving) == int(item.answer), (step, item.answer)


def test_scene_transition_goes_from_first_to_second_scene(items_by_task):
    for item in items_by_task["scene_transition"]:
        first, second = item.answer.removeprefix("From the ").removesuffix(".").split(" to the ")
        seen = item.seen_frames
        for frame, scene in ((seen[0], first), (seen[-1], second)):
            assert np.all(frame == tt.scene_image(scene), axis=-1).mean() > 0.75
        a, b = sorted((first, second))
        assert item.candidates == (f"From the {a} to the {b}.", f"From the {b} to the {a}.")


# --- balance ----------------------------------------------------------------------------


def test_answers_are_balanced(items_by_task):
    for task, items in items_by_task.items():
        counts = Counter(item.answer_index for item in items)
        expected = ITEMS_PER_TASK / tt.NUM_CANDIDATES[task]
        assert set(counts) == set(range(tt.NUM_CANDIDATES[task])), task
        assert all(abs(n - expected) < 0.3 * expected for n in counts.values()), (task, counts)


def test_objects_stay_whole_inside_the_frame(items_by_task):
    # Rendering raises if an object leaves the frame; here: constant-size objects keep every
    # pixel in every frame (never clipped or hidden by another object), colours are unique.
    for task, num_objects in (("moving_direction", 2), ("object_count", tt.COUNT_OBJECTS)):
        for item in items_by_task[task]:
            colors = colors_in(item.frames[:1])
            assert len(colors) == num_objects == len(colors_in(item.frames))
            for color in colors:
                assert len(set(color_mask(item.frames, color).sum(axis=(1, 2)).tolist())) == 1


# --- motion map and pixel normalisation -------------------------------------------------


def test_motion_map_marks_the_moving_object_not_the_background():
    frames = np.empty((8, tt.FRAME_SIZE, tt.FRAME_SIZE, 3), dtype=np.uint8)
    frames[:] = tt.BACKGROUND
    red, blue = tt.COLORS["red"], tt.COLORS["blue"]
    frames[:, 22:27, 22:27] = blue  # static, bottom-right cell
    for t in range(8):
        frames[t, 2 + t : 7 + t, 3:8] = red  # 5 px square moving 1 px per seen frame, top-left cell
    moving = tt.motion_map(frames)
    assert moving.shape == (8, 2, 2) and moving.dtype == bool
    assert not moving[0].any()
    assert moving[1:, 0, 0].all()
    assert not moving[1:, 0, 1].any() and not moving[1:, 1, 0].any() and not moving[1:, 1, 1].any()


def test_motion_map_is_quiet_when_nothing_moves_at_the_start(items_by_task):
    for item in items_by_task["object_count"]:
        early = tt.motion_map(item.seen_frames)[1:3]
        if item.answer == "0":
            assert not early.any()
        else:
            assert early.all(axis=0).any()  # some cell changes at both early steps


def test_normalized_background_is_zero():
    frame = np.full((2, 2, 3), tt.BACKGROUND, dtype=np.uint8)
    assert np.abs(tt.normalize_pixels(frame)).max() < 1e-6


# --- the written benchmark --------------------------------------------------------------


def test_written_benchmark_loads_and_decodes_to_the_rendered_frames(benchmark_root):
    if pick_video_encoder() != "libx264":
        pytest.skip("the pixel tolerance is for libx264 (yuv444p, qp 0)")
    samples = load_tvbench(benchmark_root)
    assert len(samples) == 40 * len(tt.TASKS) and check_videos_exist(samples) == []
    entries = {f"{e.task}/{e.video}": e for e in temporal_benchmark_entries(40, BENCHMARK_SEED)}
    for sample in samples[::4]:
        entry = entries[f"{sample.task}/{sample.video_path.name}"]
        decoded = read_frames(sample)
        assert decoded.indices.tolist() == tt.seen_frame_indices().tolist()
        error = np.abs(decoded.frames.astype(int) - entry.item.seen_frames.astype(int))
        assert error.max() <= DECODE_TOLERANCE, sample.sample_id
        assert sample.answer == entry.item.answer and sample.candidates == entry.candidates
        if entry.task == "object_count":  # codec noise stays under the motion threshold
            assert np.array_equal(tt.motion_map(decoded.frames), tt.motion_map(entry.item.seen_frames))


def test_written_benchmark_balances_answers_and_positions(benchmark_root):
    samples = load_tvbench(benchmark_root)
    entries = list(temporal_benchmark_entries(40, BENCHMARK_SEED))
    for task in tt.TASKS:
        positions = Counter(s.answer_index for s in samples if s.task == task)
        classes = Counter(e.item.answer_index for e in entries if e.task == task)
        # 40 divides evenly by 2 and 4 options: exactly balanced.
        assert len(positions) == len(classes) == tt.NUM_CANDIDATES[task], task
        assert len(set(positions.values())) == len(set(classes.values())) == 1, (task, positions, classes)


def test_written_benchmark_is_small(benchmark_root):
    total = sum(p.stat().st_size for p in benchmark_root.rglob("*") if p.is_file())
    print(f"temporal benchmark, 40 per task: {total / 1e6:.2f} MB")
    assert total < 1_500_000  # brief: well under 5 MB (measured about 0.5 MB)
    assert (benchmark_root / "README.md").read_text().count("\n") <= 6


def test_written_benchmark_is_deterministic(tmp_path):
    a = write_temporal_benchmark(tmp_path / "a", per_task=3, seed=5)
    b = write_temporal_benchmark(tmp_path / "b", per_task=3, seed=5)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for relative in files_a:
        assert (a / relative).read_bytes() == (b / relative).read_bytes(), relative


def test_command_line_writes_the_temporal_benchmark(tmp_path, capsys):
    synthetic_main([str(tmp_path / "cli"), "--benchmark", "temporal", "--per-task", "2", "--seed", "9"])
    assert "wrote 10 samples" in capsys.readouterr().out
    assert len(load_tvbench(tmp_path / "cli")) == 10
    entries = json.loads((tmp_path / "cli" / "json" / "object_count.json").read_text())
    assert entries[0]["video"] == "object_count_0000.mp4"

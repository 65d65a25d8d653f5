"""Qwen2.5-VL / Qwen3-VL get the sampled frames' real timing (mapflow.models.qwen_vl).

8 frames of a real 8 fps clip, decoded by mapflow's own reader: the temporal rotary positions the language model gets
through the adapter equal those of the published pipeline (the processor given qwen-vl-utils' video metadata: the
video's fps, the decoded indices and its frame count), increase group by group, and differ from those of the old call
without timing (transformers' 24 fps assumption). Qwen3-VL's ``<t seconds>`` labels carry the frames' times.
"""

import re

import numpy as np
import pytest
import torch

from mapflow.data.video import read_frames_from_path
from mapflow.inputs.prompts import CHAT_MCQA, mcqa_segments
from mapflow.knockout.engine import clean_state
from mapflow.models import load_adapter
from mapflow.models.qwen_vl import FALLBACK_FPS, seconds_per_group
from mapflow.organism.synthetic import write_video

FAMILIES = ["qwen2_5_vl", "qwen3_vl"]
VIDEO_FPS = 8
VIDEO_FRAMES = 16  # 2 s; 8 linspace frames (0, 2, .., 12, 15): the temporal groups start every 0.5 s, as the
# helper's sampled rate 8 / 16 * 8 = 4 fps says


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    frames = np.random.default_rng(5).integers(0, 256, (VIDEO_FRAMES, 32, 32, 3), dtype=np.uint8)
    path = write_video(tmp_path_factory.mktemp("qwen_timing") / "clip.mp4", frames, fps=VIDEO_FPS)
    return read_frames_from_path(path, num_frames=8, rule="linspace", cache_dir=False)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    from mapflow.testing.tiny_families import build_tiny_family

    root = tmp_path_factory.mktemp("qwen_families")
    return {
        family: load_adapter(build_tiny_family(family, root / family, seed=2, num_layers=2), attn_implementation="sdpa")
        for family in FAMILIES
    }


@pytest.fixture
def sample():
    from mapflow.data.sample import Sample

    return Sample("s/0", "s", "unused.mp4", "Which way does it move?", ("Up.", "Down.", "Left."), 1)


def group_time_positions(position_ids: torch.Tensor, layout) -> list[int]:
    """The temporal rotary position of each temporal group's video tokens (one per group, checked)."""
    temporal = position_ids[0, 0].cpu()
    out = []
    for group in layout.frames:
        values = temporal[torch.as_tensor(group.positions())].unique()
        assert values.numel() == 1, f"group {group} has several temporal positions {values.tolist()}"
        out.append(int(values))
    return out


def published_pipeline(adapter, text, frames, metadata):
    """The processor called directly as qwen-vl-utils + transformers do (metadata None: the old, untimed call), and
    the rotary positions the model's own `get_rope_index` gives for its output."""
    extra = {} if metadata is None else {"video_metadata": [metadata], "do_sample_frames": False}
    encoded = adapter.processor(text=text, videos=[frames], return_tensors="pt", **extra)
    rope_inputs = {
        k: encoded[k]
        for k in ("input_ids", "mm_token_type_ids", "video_grid_thw", "second_per_grid_ts", "attention_mask")
        if k in encoded
    }
    if "second_per_grid_ts" in rope_inputs:
        rope_inputs["second_per_grid_ts"] = torch.as_tensor(rope_inputs["second_per_grid_ts"])
    positions, _ = adapter.hf_model.model.get_rope_index(**rope_inputs)
    return encoded, positions


def helper_metadata(video):
    """What qwen-vl-utils' ``fetch_video`` hands the processor: the video's rate, the decoded indices, its length."""
    from transformers.video_utils import VideoMetadata

    return VideoMetadata(total_num_frames=video.num_video_frames, fps=video.fps, frames_indices=video.indices.tolist())


@pytest.mark.parametrize("family", FAMILIES)
def test_time_positions_equal_the_published_pipeline(family, adapters, clip, sample):
    adapter = adapters[family]
    assert clip.fps == VIDEO_FPS and clip.num_video_frames == VIDEO_FRAMES and len(clip.frames) == 8
    prepared = adapter.prepare(
        clip.frames, mcqa_segments(sample, CHAT_MCQA), timestamps=clip.indices / clip.fps
    )  # as mapflow.analysis.runner passes them
    # the positions the language model really gets on the adapter's path
    through_adapter = clean_state(adapter, prepared).language_model_kwargs["position_ids"]
    reference, published = published_pipeline(adapter, prepared.text, clip.frames, helper_metadata(clip))
    assert torch.equal(prepared.inputs["input_ids"].cpu(), reference["input_ids"])
    assert torch.equal(through_adapter.cpu(), published)
    times = group_time_positions(through_adapter, prepared.layout)
    assert len(times) == 4 and all(b > a for a, b in zip(times, times[1:])), times

    # the old call (no timing: transformers' 24 fps) gives other positions or other labels: the check can fail
    old, old_positions = published_pipeline(adapter, prepared.text, clip.frames, None)
    if family == "qwen2_5_vl":
        assert float(reference["second_per_grid_ts"][0]) == 2 / (8 / VIDEO_FRAMES * VIDEO_FPS)  # helper's formula
        assert not torch.equal(old_positions, published)
    else:
        assert not torch.equal(old["input_ids"], reference["input_ids"])


def test_qwen3_labels_carry_the_frames_times(adapters, clip, sample):
    adapter = adapters["qwen3_vl"]
    prepared = adapter.prepare(clip.frames, mcqa_segments(sample, CHAT_MCQA), timestamps=clip.indices / clip.fps)
    text = adapter.tokenizer.decode(prepared.inputs["input_ids"][0])
    labels = re.findall(r"<([0-9.]+) seconds>", text)
    # each group's label: the mean time of its two frames, frame index / the video's rate, one decimal
    seconds = clip.indices / clip.fps
    expected = [f"{(seconds[g] + seconds[g + 1]) / 2:.1f}" for g in range(0, len(seconds), 2)]
    assert labels == expected
    assert labels != [f"{(g + g + 1) / 2 / 24:.1f}" for g in range(0, len(seconds), 2)]  # not the 24 fps labels


@pytest.mark.parametrize("family", FAMILIES)
def test_without_times_frames_are_taken_at_the_stated_fallback_rate(family, adapters, clip, sample):
    adapter = adapters[family]
    prepared = adapter.prepare(clip.frames, mcqa_segments(sample, CHAT_MCQA))
    fallback = adapter.prepare(
        clip.frames, mcqa_segments(sample, CHAT_MCQA), timestamps=np.arange(len(clip.frames)) / FALLBACK_FPS
    )
    assert torch.equal(prepared.inputs["input_ids"], fallback.inputs["input_ids"])
    if family == "qwen2_5_vl":
        assert float(prepared.inputs["second_per_grid_ts"][0]) == 2 / FALLBACK_FPS


def test_group_spacing_rules():
    # evenly tiled frames (segment midpoints of 300 frames at 30 fps): the helper's 2 / (8 / 300 * 30) = 2.5 s
    midpoints = np.array([18, 56, 93, 130, 168, 206, 243, 280]) / 30
    assert seconds_per_group(midpoints, 2) == 2.5
    # linspace with both ends: the groups' actual spacing (256 / 30 / 3 s), not the helper's 2.5 s
    ends = np.array([0, 43, 85, 128, 171, 214, 256, 299]) / 30
    assert seconds_per_group(ends, 2) == pytest.approx(256 / 30 / 3, abs=1e-6)
    # non-uniform: the mean spacing of the group starts
    assert seconds_per_group(np.array([0.0, 0.1, 1.0, 1.1, 4.0, 4.2]), 2) == 2.0
    # one group or times that do not advance: the fallback rate's spacing
    assert seconds_per_group(np.array([3.0, 3.5]), 2) == 2 / FALLBACK_FPS
    assert seconds_per_group(np.zeros(8), 2) == 2 / FALLBACK_FPS


def test_bad_timestamps_are_refused(adapters, clip, sample):
    adapter = adapters["qwen2_5_vl"]
    with pytest.raises(ValueError, match="7 timestamps for 8 frames"):
        adapter.prepare(clip.frames, mcqa_segments(sample, CHAT_MCQA), timestamps=np.arange(7) / 8)
    with pytest.raises(ValueError, match="non-decreasing"):
        adapter.prepare(clip.frames, mcqa_segments(sample, CHAT_MCQA), timestamps=np.arange(8)[::-1] / 8)

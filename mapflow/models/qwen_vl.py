"""Qwen2.5-VL and Qwen3-VL (`Qwen2_5_VLForConditionalGeneration`, `Qwen3VLForConditionalGeneration`).

The vision tower merges two input frames into one temporal patch (``temporal_patch_size=2``; an odd frame count is
padded by repeating the last frame), so the frame unit is the temporal group: ``video_grid_thw = [[T/2, gh, gw]]``
and each group has ``gh*gw/merge²`` tokens in raster order. Qwen2.5-VL writes all groups as one run between
``<|vision_start|>`` and ``<|vision_end|>``; Qwen3-VL's processor writes each group as its own run after a
``<t seconds>`` timestamp (those timestamps and wrappers are ``video_markup``).

Positions are 3-D rotary (t, h, w) computed from ``input_ids`` and the grid; a forward from the clean run's embeddings
must be given the clean ``position_ids``. Qwen3-VL also adds "deepstack" visual features to the hidden states of its
first decoder layers at the visual positions, so those (cut to the suffix) go with it.

**Frame timing.** The temporal rotary position of group g is ``int(g * second_per_grid_ts * tokens_per_second)``
(Qwen2.5-VL), and Qwen3-VL writes each group's time into its ``<t seconds>`` label; both come from the video metadata
the processor is given. Given none, transformers assumes 24 fps, which squeezes an 8-frame clip of a 10 s video into
one time position. mapflow passes the sampled frames' real times (`clip_metadata`), as the published helper
(qwen-vl-utils ``fetch_video``) does with its ``fps = nframes / total_frames * video_fps``:

- ``second_per_grid_ts`` is the mean time between the first frames of successive temporal groups. For frames that
  tile the clip evenly (mapflow's segment-midpoint and LongVideoBench rules, or every frame of a clip) that is the
  helper's ``temporal_patch_size / fps``; for non-uniform times it is their mean group spacing. For ``linspace``
  sampling with both ends included the helper's formula is ``total/n`` frames per frame where the frames are really
  ``(total-1)/(n-1)`` apart: mapflow keeps the actual spacing.
- Qwen3-VL's labels are the mean time of each group's frames, from the times themselves.
- Without times (the load-time self-test, direct calls without ``timestamps``) the frames are taken as sampled at
  ``FALLBACK_FPS`` = 2 frames per second, the helper's and Qwen3-VL's default sampling rate.
"""

from __future__ import annotations

import numpy as np

from .chat import ChatVideoLLMAdapter

# qwen-vl-utils' default sampling rate (``FPS = 2.0``), also `Qwen3VLVideoProcessor.fps`: the frames' assumed rate when
# the caller gives no times
FALLBACK_FPS = 2.0
# a microsecond grid far below any frame period: float noise of the subtraction must not push an exact whole time
# position just below it (the model truncates ``g * second_per_grid_ts * tokens_per_second``)
_SECONDS_DECIMALS = 6


def frame_times(timestamps, num_frames: int) -> np.ndarray:
    """Each frame's time in seconds: the given ones (checked), or frames at ``FALLBACK_FPS`` when there are none."""
    if timestamps is None:
        return np.arange(num_frames, dtype=float) / FALLBACK_FPS
    times = np.asarray(timestamps, dtype=float)
    if times.shape != (num_frames,):
        raise ValueError(f"got {times.size} timestamps for {num_frames} frames")
    if not np.isfinite(times).all() or (np.diff(times) < 0).any():
        raise ValueError(f"frame timestamps must be finite and non-decreasing seconds, got {times.tolist()}")
    return times


def seconds_per_group(times: np.ndarray, temporal_patch_size: int) -> float:
    """Mean time between the first frames of successive temporal groups (``second_per_grid_ts``).

    One group, or a clip whose times do not advance, has no spacing of its own: the fallback rate's."""
    starts = times[::temporal_patch_size]
    spacing = round(float(starts[-1] - starts[0]) / (len(starts) - 1), _SECONDS_DECIMALS) if len(starts) > 1 else 0.0
    return spacing if spacing > 0 else temporal_patch_size / FALLBACK_FPS


def clip_metadata(timestamps, num_frames: int, temporal_patch_size: int):
    """`VideoMetadata` giving the processor the sampled frames' real timing (see the module notes).

    Its unit is the second (``fps`` 1, ``frames_indices`` the times), so Qwen3-VL's labels are the times themselves;
    ``total_num_frames`` is the clip's length in seconds, ``num_frames`` frames each one group spacing per
    ``temporal_patch_size`` frames long, so that ``sampled_fps = temporal_patch_size / second_per_grid_ts``.
    """
    from transformers.video_utils import VideoMetadata

    times = frame_times(timestamps, num_frames)
    spacing = seconds_per_group(times, temporal_patch_size)
    return VideoMetadata(
        total_num_frames=num_frames * spacing / temporal_patch_size, fps=1.0, frames_indices=times.tolist()
    )


class Qwen2_5_VLAdapter(ChatVideoLLMAdapter):
    family = "qwen2_5_vl"
    architectures = ("Qwen2_5_VLForConditionalGeneration",)
    frame_unit = "temporal group of 2 frames"
    token_layout = "<|vision_start|> + (T/2)*(h*w) contiguous video tokens, group-major + <|vision_end|>; 3-D rope"
    clean_language_model_kwargs = ("position_ids",)

    def _merge(self) -> int:
        return self.hf_model.config.vision_config.spatial_merge_size

    def video_processor_kwargs(self, frames: np.ndarray, timestamps) -> dict:
        # mapflow samples the frames itself (--frame-rule): the processor takes them as they are, with their timing
        patch = self.processor.video_processor.temporal_patch_size
        return {"do_sample_frames": False, "video_metadata": [clip_metadata(timestamps, len(frames), patch)]}

    def video_grid(self, encoded) -> tuple[int, int, int]:
        groups, height, width = (int(x) for x in encoded["video_grid_thw"][0])
        return groups, height // self._merge(), width // self._merge()

    def frame_sizes(self, encoded) -> list[int]:
        groups, height, width = self.video_grid(encoded)
        return [height * width] * groups


class Qwen3VLAdapter(Qwen2_5_VLAdapter):
    family = "qwen3_vl"
    architectures = ("Qwen3VLForConditionalGeneration",)
    token_layout = (
        "per temporal group: '<t seconds>' <|vision_start|> + h*w video tokens + <|vision_end|>; "
        "3-D rope; deepstack features in the first layers"
    )
    clean_language_model_kwargs = ("position_ids", "visual_pos_masks", "deepstack_visual_embeds")
    suffix_kwargs_broadcast = False  # deepstack features are indexed per row

    def suffix_language_model_kwargs(self, clean_kwargs: dict, start: int, rows: int) -> dict:
        out = super().suffix_language_model_kwargs({"position_ids": clean_kwargs["position_ids"]}, start, rows)
        visual = clean_kwargs.get("visual_pos_masks")
        if visual is not None:
            # deepstack features are stored for the visual positions in order: keep those inside the suffix
            earlier = int(visual[0, :start].sum())
            out["visual_pos_masks"] = visual[:, start:].expand(rows, -1)
            out["deepstack_visual_embeds"] = [
                features[earlier:].repeat(rows, 1) for features in clean_kwargs["deepstack_visual_embeds"]
            ]
        return out

"""VideoLLaMA3 (`VideoLlama3ForConditionalGeneration`), set up as the paper's code runs it.

The processor writes ``Time {t:.1f}s:`` + the frame's video tokens per frame, joined by commas (``video_markup``).
The paper's code (spec §1.1, §1.3) differs from the processor's defaults, and mapflow follows the code:

- **Frame runs.** Its video range is the whole block, and frame i is ``[comma_{i-1}, comma_i)``: the comma before the
  frame, its ``Time t s:`` label and its tokens. ``cross_frame`` cuts between these runs (`TokenLayout.runs`), so no
  position of a frame's run reads an earlier run; ``cross_frame_tokens`` cuts between the feature tokens only.
- **No token compression** (``use_token_compression=False``): every frame keeps its full grid. A checkpoint whose
  config sets ``mapflow_keep_token_compression: true`` keeps the processor's own setting.
- **Frame size as the released processor** (``simple_batched_resize`` of the released
  ``image_processing_videollama3.py``, with the code's ``max_tokens = frames * 144``): each side is rounded to the
  nearest multiple of patch x merge (28); only a frame whose rounded grid exceeds 144 tokens is scaled down (aspect
  kept, sides floored), only one below the released ``min_tokens`` of 16 scaled up. A 320x240 frame thus keeps its
  9 x 11 = 99 tokens; the checkpoint processor's own minimum (128 tokens) would upscale it to 140. mapflow gives the
  checkpoint's video processor these two bounds (its ``smart_resize`` is the same rule).
- **Real timestamps**: the labels carry each frame's time in the video (``frame index / decoded fps``) when the caller
  passes them (the runner does); without them the processor falls back to one second per frame.
- **Frames** are sampled with ``linspace`` (first and last frame included) unless ``--frame-rule`` says otherwise.
- **Prompt**: template ``videollama3_mcqa``, the released instruction without an answer prompt (the letter follows
  ``<|im_start|>assistant\\n``).
"""

from __future__ import annotations

import numpy as np

from ..inputs.prompts import VIDEOLLAMA3_MCQA
from .chat import ChatVideoLLMAdapter

TOKENS_PER_FRAME = 144  # the paper's 12 x 12 budget per frame (an upper bound: grids keep the aspect ratio)
# the released image processor's smallest frame, in merged tokens (`Videollama3ImageProcessor(min_tokens=4 * 4)`; the
# paper's code sets only max_tokens)
RELEASED_MIN_TOKENS = 16
KEEP_COMPRESSION_KEY = "mapflow_keep_token_compression"


class VideoLlama3Adapter(ChatVideoLLMAdapter):
    family = "videollama3"
    architectures = ("VideoLlama3ForConditionalGeneration",)
    frame_unit = "frame (variable token count)"
    token_layout = (
        "per frame: 'Time {t}s:' + that frame's video tokens, comma-joined; a frame's run for "
        "cross_frame is its comma, label and tokens; <= 144 tokens per frame, no compression"
    )
    default_prompt_template = VIDEOLLAMA3_MCQA
    frame_runs_with_markup = True
    default_frame_rule = "linspace"
    tokens_per_frame: int | None = TOKENS_PER_FRAME  # None: the processor's own pixel budget

    @property
    def token_compression(self) -> bool:
        return bool(getattr(self.hf_model.config, KEEP_COMPRESSION_KEY, False)) and bool(
            getattr(self.processor.video_processor, "use_token_compression", False)
        )

    def video_processor_kwargs(self, frames: np.ndarray, timestamps) -> dict:
        from transformers.video_utils import VideoMetadata

        video = self.processor.video_processor
        # mapflow samples the frames itself (--frame-rule); the processor must take them as they are
        kwargs = {"use_token_compression": self.token_compression, "do_sample_frames": False}
        if self.tokens_per_frame is not None:
            merged_patch = video.patch_size * video.merge_size
            # the processor divides longest_edge by the frame count: the released per-frame budget; shortest_edge is
            # the released minimum, not the checkpoint's larger one (which would upscale small frames)
            kwargs["size"] = {
                "longest_edge": len(frames) * self.tokens_per_frame * merged_patch * merged_patch,
                "shortest_edge": RELEASED_MIN_TOKENS * merged_patch * merged_patch,
            }
        if timestamps is None:
            timestamps = np.arange(len(frames), dtype=float)  # the processor's own fallback (fps 1), stated
        else:
            timestamps = np.asarray(timestamps, dtype=float)
            if timestamps.shape != (len(frames),):
                raise ValueError(f"got {timestamps.size} timestamps for {len(frames)} frames")
        # VideoMetadata's timestamps are frames_indices / fps: give the times themselves at fps 1
        kwargs["video_metadata"] = [
            VideoMetadata(total_num_frames=len(frames), fps=1.0, frames_indices=timestamps.tolist())
        ]
        return kwargs

    def _grid(self, encoded) -> tuple[int, int, int]:
        frames, height, width = (int(x) for x in encoded["video_grid_thw"][0])
        merge = int(encoded["video_merge_sizes"][0])
        return frames, height // merge, width // merge

    def frame_sizes(self, encoded) -> list[int]:
        frames = self._grid(encoded)[0]
        kept = encoded["video_compression_mask"]
        return [int(part.sum()) for part in kept.split(len(kept) // frames)]

    def video_grid(self, encoded) -> tuple[int, int, int] | None:
        return self._grid(encoded) if bool(encoded["video_compression_mask"].all()) else None

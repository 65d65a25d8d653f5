"""VideoLLaMA3 (`VideoLlama3ForConditionalGeneration`).

The processor writes ``Time {t:.1f}s:`` + the frame's video tokens per frame, joined by commas: each frame is its own
run, separated by timestamp text (``video_markup``). With token compression (``use_token_compression``) the
processor drops patches that barely changed since the previous frame, so frames have different token counts; the
counts come from ``video_compression_mask``. The paper's code turns compression off (each frame then has its full
``h x w`` grid) and counts the timestamp text into its video range: that is the ``video_block`` span here.
"""

from __future__ import annotations

from .chat import ChatVideoLLMAdapter


class VideoLlama3Adapter(ChatVideoLLMAdapter):
    family = "videollama3"
    architectures = ("VideoLlama3ForConditionalGeneration",)
    frame_unit = "frame (variable token count)"
    token_layout = "per frame: 'Time {t}s:' + that frame's video tokens, comma-joined (runs separated by text)"

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

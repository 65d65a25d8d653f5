"""InternVL (`InternVLForConditionalGeneration`), the HF port of InternVL 2.5/3 (and of Mini-InternVL checkpoints
converted to it).

A video is a stack of frame images in ``pixel_values``. The processor writes ``Frame{i}: <img>`` + ``image_seq_length``
``<IMG_CONTEXT>`` tokens + ``</img>`` per frame, joined by newlines: one run of context tokens per frame (the frame
labels and ``<img>``/``</img>`` are ``video_markup``). Each frame is a ``s x s`` grid after the 0.5 pixel shuffle.
"""

from __future__ import annotations

import math

from .chat import ChatVideoLLMAdapter


class InternVLAdapter(ChatVideoLLMAdapter):
    family = "internvl"
    architectures = ("InternVLForConditionalGeneration",)
    frame_unit = "frame"
    token_layout = "per frame: 'Frame{i}: <img>' + image_seq_length <IMG_CONTEXT> tokens + '</img>', newline-joined"

    @property
    def video_token_id(self) -> int:
        return self.processor.image_token_id  # frames are images: their features fill the <IMG_CONTEXT> tokens

    def video_grid(self, encoded) -> tuple[int, int, int]:
        side = math.isqrt(self.processor.image_seq_length)
        return int(encoded["pixel_values"].shape[0]), side, side

    def frame_sizes(self, encoded) -> list[int]:
        return [self.processor.image_seq_length] * int(encoded["pixel_values"].shape[0])

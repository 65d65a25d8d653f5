"""LLaVA-OneVision (`LlavaOnevisionForConditionalGeneration`).

One ``<video>`` placeholder becomes ``T*h*w + 1`` video tokens: each frame's projected features are 2x2-pooled
(bilinear at half size) to an ``h x w`` grid, frames follow each other frame-major, and one learned ``image_newline``
feature closes the video. That last token belongs to no frame: it is ``video_markup``.
"""

from __future__ import annotations

import math

from .chat import ChatVideoLLMAdapter


class LlavaOnevisionAdapter(ChatVideoLLMAdapter):
    family = "llava_onevision"
    architectures = ("LlavaOnevisionForConditionalGeneration",)
    frame_unit = "frame"
    token_layout = "<video> -> T*h*w contiguous video tokens, frame-major, + 1 newline token (markup)"
    trailing_video_tokens = 1

    def video_grid(self, encoded) -> tuple[int, int, int]:
        side = math.ceil(math.isqrt(self.processor.num_image_tokens) / 2)
        return int(encoded["pixel_values_videos"].shape[1]), side, side

    def frame_sizes(self, encoded) -> list[int]:
        frames, height, width = self.video_grid(encoded)
        return [height * width] * frames

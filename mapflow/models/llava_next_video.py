"""LLaVA-NeXT-Video (`LlavaNextVideoForConditionalGeneration`).

One ``<video>`` placeholder is expanded by the processor into ``T * h * w`` contiguous video tokens, frame-major and
raster order inside a frame; ``h = w = (crop // patch) // spatial_pool_stride`` after the CLS token is dropped.
"""

from __future__ import annotations

import numpy as np

from ..errors import LayoutError
from ..prompts import VIDEO, PromptSegment, prompt_text
from ..tokenization import build_layout
from .base import PreparedInput, VideoLLMAdapter


class LlavaNextVideoAdapter(VideoLLMAdapter):
    family = "llava_next_video"
    architectures = ("LlavaNextVideoForConditionalGeneration",)

    @property
    def language_model(self):
        return self.model.model.language_model

    def _video_grid(self, pixel_values_videos) -> tuple[int, int, int]:
        config = self.hf_model.config
        if config.vision_feature_select_strategy != "default":
            raise LayoutError("only vision_feature_select_strategy='default' (CLS dropped) has a square frame grid")
        patch = config.vision_config.patch_size
        stride = config.spatial_pool_stride
        frames, height, width = pixel_values_videos.shape[1], pixel_values_videos.shape[-2], pixel_values_videos.shape[-1]
        return int(frames), (height // patch) // stride, (width // patch) // stride

    def prepare(self, frames: np.ndarray, segments: list[PromptSegment], *, option_letters=(), true_letter=None,
                non_option_includes_prefix: bool = True) -> PreparedInput:
        placeholder = self.processor.video_token
        video_segments = [s for s in segments if s.name == VIDEO]
        if len(video_segments) != 1 or video_segments[0].text != placeholder:
            raise LayoutError(f"the prompt needs exactly one '{VIDEO}' segment holding {placeholder!r}")
        text = prompt_text(segments)
        if text.count(placeholder) != 1:
            raise LayoutError(f"{placeholder!r} must occur exactly once in the prompt (found {text.count(placeholder)})")
        encoded = self.processor(text=text, videos=[np.asarray(frames)], return_tensors="pt",
                                 return_offsets_mapping=True)
        offsets = encoded.pop("offset_mapping")[0]
        input_ids = encoded["input_ids"][0]
        n_video = int((input_ids == self.processor.video_token_id).sum())
        seen_text = text.replace(placeholder, placeholder * n_video)  # what the tokenizer was given
        layout = build_layout(
            segments, seen_text, input_ids.numpy(), offsets.numpy(), video_token_id=self.processor.video_token_id,
            video_placeholder=placeholder, video_grid=self._video_grid(encoded["pixel_values_videos"]),
            option_letters=option_letters, true_letter=true_letter,
            non_option_includes_prefix=non_option_includes_prefix,
        )
        inputs = {k: v.to(self.hf_model.device) if hasattr(v, "to") else v for k, v in encoded.items()}
        if inputs["pixel_values_videos"].is_floating_point():
            inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(self.hf_model.dtype)
        return PreparedInput(inputs=inputs, layout=layout, text=text, segments=list(segments))

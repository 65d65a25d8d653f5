"""LLaVA-NeXT-Video (`LlavaNextVideoForConditionalGeneration`).

One ``<video>`` placeholder is expanded by the processor into ``T * h * w`` contiguous video tokens, frame-major and
raster order inside a frame; ``h = w = (crop // patch) // spatial_pool_stride`` after the CLS token is dropped.
"""

from __future__ import annotations

from ..errors import LayoutError
from ..inputs.prompts import VIDEO, PromptSegment
from .base import VideoLLMAdapter
from .pllava import POOLING_KEY, use_pllava_video_path


class LlavaNextVideoAdapter(VideoLLMAdapter):
    family = "llava_next_video"
    architectures = ("LlavaNextVideoForConditionalGeneration",)
    frame_unit = "frame"
    token_layout = "<video> -> T*h*w contiguous video tokens, frame-major (2x2-pooled patch grid, CLS dropped)"

    def __init__(self, hf_model, processor, **kwargs):
        if use_pllava_video_path(hf_model):  # the paper's LLaVA-NeXT-Video-FT checkpoints (converted from PLLaVA)
            self.self_test_frames = getattr(hf_model.config, POOLING_KEY)[0]
        if hf_model.config.video_token_id == hf_model.config.image_token_id:
            # an image LLaVA-NeXT converted for video (models/llava_next_image.py): its <image> token is the video
            # placeholder, as in PLLaVA (the tokenizer's own video_token, if any, is not in the model's vocabulary)
            processor.video_token, processor.video_token_id = processor.image_token, processor.image_token_id
            processor.image_token = None  # else the processor counts the placeholder as an image without pixels
        super().__init__(hf_model, processor, **kwargs)

    def render_prompt(self, segments):
        """The segments with the video segment written as this checkpoint's placeholder (``<image>`` for a
        converted image model, whose prompt is then the paper's ``USER: <image>\n USER: …``)."""
        placeholder = self.processor.video_token
        return super().render_prompt([PromptSegment(s.name, placeholder) if s.name == VIDEO else s for s in segments])

    @property
    def language_model(self):
        return self.model.model.language_model

    def video_grid(self, encoded) -> tuple[int, int, int]:
        config = self.hf_model.config
        pooling = getattr(config, POOLING_KEY, None)
        if pooling is not None:
            if encoded["pixel_values_videos"].shape[1] != pooling[0]:
                raise LayoutError(
                    f"this PLLaVA checkpoint pools time to {pooling[0]} frames; give exactly "
                    f"{pooling[0]} frames (got {encoded['pixel_values_videos'].shape[1]})"
                )
            return tuple(int(x) for x in pooling)
        if config.vision_feature_select_strategy != "default":
            raise LayoutError("only vision_feature_select_strategy='default' (CLS dropped) has a square frame grid")
        patch = config.vision_config.patch_size
        stride = config.spatial_pool_stride
        pixels = encoded["pixel_values_videos"]
        return int(pixels.shape[1]), (pixels.shape[-2] // patch) // stride, (pixels.shape[-1] // patch) // stride

    def frame_sizes(self, encoded) -> list[int]:
        frames, height, width = self.video_grid(encoded)
        return [height * width] * frames

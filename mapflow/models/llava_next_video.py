"""LLaVA-NeXT-Video (`LlavaNextVideoForConditionalGeneration`).

One ``<video>`` placeholder is expanded by the processor into ``T * h * w`` contiguous video tokens, frame-major and
raster order inside a frame; ``h = w = (crop // patch) // spatial_pool_stride`` after the CLS token is dropped.
"""

from __future__ import annotations

from ..errors import LayoutError
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
        super().__init__(hf_model, processor, **kwargs)

    @property
    def language_model(self):
        return self.model.model.language_model

    def video_grid(self, encoded) -> tuple[int, int, int]:
        config = self.hf_model.config
        pooling = getattr(config, POOLING_KEY, None)
        if pooling is not None:
            if encoded["pixel_values_videos"].shape[1] != pooling[0]:
                raise LayoutError(f"this PLLaVA checkpoint pools time to {pooling[0]} frames; give exactly "
                                  f"{pooling[0]} frames (got {encoded['pixel_values_videos'].shape[1]})")
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

"""The paper's LLaVA-NeXT-Video-FT checkpoints, released in the PLLaVA layout, on the native LLaVA-NeXT-Video class.

PLLaVA runs CLIP (selected layer, CLS dropped), then the projector (linear, GELU, linear) on every patch, then a 3-D
average pool of the (T, 24, 24) grid to ``pooling_shape`` (8, 12, 12), flattened (t, h, w); one ``<image>`` placeholder
takes all the tokens. `LlavaNextVideoForConditionalGeneration` has the same vision tower, projector, language model
and token order, but pools *before* the projector; the projector is not linear, so the native class is not the same
computation (tests/test_pllava.py shows the difference). So the converted checkpoint keeps the native class and its
weight names and records ``mapflow_pllava_pooling_shape`` in its config; `load_adapter` then gives the inner model
`PllavaVideoModel`, the native model with PLLaVA's project-then-pool video features. Everything else (processor,
layout, analyses) is LLaVA-NeXT-Video's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from transformers import LlavaNextVideoModel

from ..errors import ModelLoadError

POOLING_KEY = "mapflow_pllava_pooling_shape"


class PllavaVideoModel(LlavaNextVideoModel):
    """LLaVA-NeXT-Video's inner model with PLLaVA's video path: project every patch, then 3-D average pooling."""

    def get_video_features(
        self, pixel_values_videos, vision_feature_layer=None, vision_feature_select_strategy=None, **kwargs
    ):
        shape = tuple(getattr(self.config, POOLING_KEY))
        batch, frames, channels, height, width = pixel_values_videos.shape
        if frames != shape[0]:
            raise ValueError(
                f"this PLLaVA checkpoint pools time to {shape[0]} frames; feed exactly {shape[0]} "
                f"frames (got {frames}) so the processor's token count matches"
            )
        layer = self.config.vision_feature_layer if vision_feature_layer is None else vision_feature_layer
        strategy = vision_feature_select_strategy or self.config.vision_feature_select_strategy
        kwargs = {**kwargs, "output_hidden_states": True, "return_dict": True}
        outputs = self.vision_tower(pixel_values_videos.reshape(batch * frames, channels, height, width), **kwargs)
        selected = outputs.hidden_states[layer]
        if strategy == "default":
            selected = selected[:, 1:]
        projected = self.multi_modal_projector(selected)  # (B*T, side*side, D)
        side = int(round(projected.shape[1] ** 0.5))
        grid = projected.reshape(batch, frames, side, side, -1).permute(0, 4, 1, 2, 3)  # (B, D, T, side, side)
        pooled = torch.nn.functional.adaptive_avg_pool3d(grid, shape)
        outputs.pooler_output = pooled.flatten(2).transpose(1, 2)  # (B, t*h*w, D), order (t, h, w)
        return outputs


def use_pllava_video_path(hf_model) -> bool:
    """Give a loaded LLaVA-NeXT-Video model PLLaVA's video path if its config asks for it; True if it did."""
    if getattr(hf_model.config, POOLING_KEY, None) is None:
        return False
    hf_model.model.__class__ = PllavaVideoModel
    return True


def convert_pllava_checkpoint(src, dst) -> Path:
    """Write a PLLaVA-layout checkpoint (config with ``pooling_shape``) as a LLaVA-NeXT-Video checkpoint that
    `load_adapter` runs with PLLaVA's computation.

    PLLaVA stores its weights under the llava-hf names (``vision_tower.vision_model.*``, ``multi_modal_projector.*``,
    ``language_model.model.*``, ``language_model.lm_head.*``), which transformers maps onto the native class at load
    time, so the weight files are copied unchanged; only the config changes. A LLaVA-NeXT-Video processor (``<video>``
    placeholder, 336 px crops) must be among the copied files or be added after.
    """
    src, dst = Path(src), Path(dst)
    config_file = src / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{src} is not a checkpoint directory: no config.json")
    config = json.loads(config_file.read_text())
    if "pooling_shape" not in config:
        raise ModelLoadError(f"{config_file} has no pooling_shape: not a PLLaVA checkpoint")
    if not any(src.glob("*.safetensors")):
        raise ModelLoadError(f"{src} holds no .safetensors weights")
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.is_file() and item.name != "config.json":
            shutil.copy2(item, dst / item.name)
    config[POOLING_KEY] = list(config.pop("pooling_shape"))
    config["architectures"] = ["LlavaNextVideoForConditionalGeneration"]
    config["model_type"] = "llava_next_video"
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    return dst

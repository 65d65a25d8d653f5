"""Qwen2.5-VL and Qwen3-VL (`Qwen2_5_VLForConditionalGeneration`, `Qwen3VLForConditionalGeneration`).

The vision tower merges two input frames into one temporal patch (``temporal_patch_size=2``; an odd frame count is
padded by repeating the last frame), so the frame unit is the temporal group: ``video_grid_thw = [[T/2, gh, gw]]``
and each group has ``gh*gw/merge²`` tokens in raster order. Qwen2.5-VL writes all groups as one run between
``<|vision_start|>`` and ``<|vision_end|>``; Qwen3-VL's processor writes each group as its own run after a
``<t seconds>`` timestamp (those timestamps and wrappers are ``video_markup``).

Positions are 3-D rotary (t, h, w) computed from ``input_ids`` and the grid; a forward from the clean run's embeddings
must be given the clean ``position_ids``. Qwen3-VL also adds "deepstack" visual features to the hidden states of its
first decoder layers at the visual positions, so those (cut to the suffix) go with it.
"""

from __future__ import annotations

from .chat import ChatVideoLLMAdapter


class Qwen2_5_VLAdapter(ChatVideoLLMAdapter):
    family = "qwen2_5_vl"
    architectures = ("Qwen2_5_VLForConditionalGeneration",)
    frame_unit = "temporal group of 2 frames"
    token_layout = "<|vision_start|> + (T/2)*(h*w) contiguous video tokens, group-major + <|vision_end|>; 3-D rope"
    clean_language_model_kwargs = ("position_ids",)

    def _merge(self) -> int:
        return self.hf_model.config.vision_config.spatial_merge_size

    def video_grid(self, encoded) -> tuple[int, int, int]:
        groups, height, width = (int(x) for x in encoded["video_grid_thw"][0])
        return groups, height // self._merge(), width // self._merge()

    def frame_sizes(self, encoded) -> list[int]:
        groups, height, width = self.video_grid(encoded)
        return [height * width] * groups


class Qwen3VLAdapter(Qwen2_5_VLAdapter):
    family = "qwen3_vl"
    architectures = ("Qwen3VLForConditionalGeneration",)
    token_layout = ("per temporal group: '<t seconds>' <|vision_start|> + h*w video tokens + <|vision_end|>; "
                    "3-D rope; deepstack features in the first layers")
    clean_language_model_kwargs = ("position_ids", "visual_pos_masks", "deepstack_visual_embeds")
    suffix_kwargs_broadcast = False  # deepstack features are indexed per row

    def suffix_language_model_kwargs(self, clean_kwargs: dict, start: int, rows: int) -> dict:
        out = super().suffix_language_model_kwargs({"position_ids": clean_kwargs["position_ids"]}, start, rows)
        visual = clean_kwargs.get("visual_pos_masks")
        if visual is not None:
            # deepstack features are stored for the visual positions in order: keep those inside the suffix
            earlier = int(visual[0, :start].sum())
            out["visual_pos_masks"] = visual[:, start:].expand(rows, -1)
            out["deepstack_visual_embeds"] = [features[earlier:].repeat(rows, 1)
                                              for features in clean_kwargs["deepstack_visual_embeds"]]
        return out

"""InternVL (`InternVLForConditionalGeneration`), the HF port of InternVL 2.5/3 (and of Mini-InternVL checkpoints
converted to it).

A video is a stack of frame images in ``pixel_values``. The processor writes ``Frame{i}: <img>`` + ``image_seq_length``
``<IMG_CONTEXT>`` tokens + ``</img>`` per frame, joined by newlines: one run of context tokens per frame (the frame
labels and ``<img>``/``</img>`` are ``video_markup``). Each frame is a ``s x s`` grid after the 0.5 pixel shuffle.

Checkpoints converted from the original InternVL-Chat layout (`internvl_convert`, e.g. the paper's
Mini-InternVL-4B-Video-FT) carry ``mapflow_internvl_single_image_run`` in their config: the paper's prompt then holds
all frames in one ``<img>`` + T x ``image_seq_length`` ``<IMG_CONTEXT>`` + ``</img>`` run (as the original
``chat()`` and the paper's code build it), written as raw text in the paper's Phi-3 conversation format
(`INTERNVL_PHI3_MCQA`) instead of through the chat template. The frames still partition that run, frame-major.
"""

from __future__ import annotations

import math

from ..inputs.prompts import INTERNVL_PHI3_MCQA, PromptSegment
from .base import VideoLLMAdapter
from .chat import ChatVideoLLMAdapter

SINGLE_RUN_KEY = "mapflow_internvl_single_image_run"


def single_run_video_replacement(processor):
    """The processor's video expansion as the original InternVL-Chat writes it: every frame's context tokens in one
    ``<img>…</img>`` run, no frame labels."""

    def replace_video_token(video_inputs: dict, video_idx: int, **kwargs) -> str:
        frames = video_inputs["pixel_values_videos"][video_idx].shape[0]
        context = processor.image_token * (processor.image_seq_length * frames)
        return f"{processor.start_image_token}{context}{processor.end_image_token}"

    return replace_video_token


class InternVLAdapter(ChatVideoLLMAdapter):
    family = "internvl"
    architectures = ("InternVLForConditionalGeneration",)
    frame_unit = "frame"
    token_layout = (
        "per frame: 'Frame{i}: <img>' + image_seq_length <IMG_CONTEXT> tokens + '</img>', newline-joined; "
        "converted InternVL-Chat checkpoints: one '<img>' + frames x image_seq_length + '</img>' run"
    )

    def __init__(self, hf_model, processor, *, path=None):
        super().__init__(hf_model, processor, path=path)
        self.single_run = bool(getattr(hf_model.config, SINGLE_RUN_KEY, False))
        if self.single_run:
            processor.replace_video_token = single_run_video_replacement(processor)
            self.default_prompt_template = INTERNVL_PHI3_MCQA

    def render_prompt(self, segments: list[PromptSegment]) -> list[PromptSegment]:
        if self.single_run:  # the paper writes the conversation itself, so the segments are the text as they are
            return VideoLLMAdapter.render_prompt(self, segments)
        return super().render_prompt(segments)

    @property
    def video_token_id(self) -> int:
        return self.processor.image_token_id  # frames are images: their features fill the <IMG_CONTEXT> tokens

    def video_grid(self, encoded) -> tuple[int, int, int]:
        side = math.isqrt(self.processor.image_seq_length)
        return int(encoded["pixel_values"].shape[0]), side, side

    def frame_sizes(self, encoded) -> list[int]:
        return [self.processor.image_seq_length] * int(encoded["pixel_values"].shape[0])

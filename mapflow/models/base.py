"""The one model-adapter interface every analysis talks to.

An adapter wraps a Hugging Face video LLM in nnsight and gives its parts standard names (decoder ``layers``,
``attention(i)``, ``final_norm``, ``lm_head``), counts, and one family-specific job: turning (frames, prompt
segments) into model inputs plus an exact `TokenLayout`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from nnsight import NNsight

from ..errors import ModelLoadError
from ..knockout import apply_knockout
from ..layout import TokenLayout
from ..prompts import McqaTemplate, PromptSegment


@dataclass
class PreparedInput:
    """Model inputs for one sample and where everything sits in them."""

    inputs: dict[str, torch.Tensor]
    layout: TokenLayout
    text: str
    segments: list[PromptSegment]


class VideoLLMAdapter(ABC):
    """Standard names over one family of HF video LLMs. Subclasses set `architectures` and implement `prepare`."""

    family: ClassVar[str]
    architectures: ClassVar[tuple[str, ...]]
    frame_unit: ClassVar[str] = "frame"

    def __init__(self, hf_model: torch.nn.Module, processor, *, path: str | Path | None = None):
        self.hf_model = hf_model
        self.processor = processor
        self.path = None if path is None else Path(path)
        self.model = NNsight(hf_model)
        self.prompt_template: McqaTemplate | None = None  # the checkpoint's own prompt, if it names one

    # ---- standard names ---------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def language_model(self):
        """Envoy of the text decoder stack (the module holding ``layers`` and ``norm``)."""

    @property
    def layers(self):
        return self.language_model.layers

    def attention(self, i: int):
        return self.layers[i].self_attn

    # the attention-function call inside a layer's self-attention forward, as nnsight's `.source` names it
    attention_call_name: ClassVar[str] = "attention_interface_1"

    def attention_call(self, i: int):
        """Envoy of the attention function call of layer ``i``; its inputs are (module, q, k, v, mask, ...)."""
        return getattr(self.attention(i).source, self.attention_call_name)

    def hf_model_attention(self, i: int) -> torch.nn.Module:
        """The plain torch module of layer ``i``'s self-attention (for constants such as ``scaling``)."""
        return self.attention(i)._module

    @property
    def final_norm(self):
        return self.language_model.norm

    @property
    def input_embeddings(self):
        """Envoy of the token embedding table (the released code's logit lens projects with its weight)."""
        return self.language_model.embed_tokens

    @property
    def lm_head(self):
        return self.model.lm_head

    @property
    def text_config(self):
        return self.hf_model.config.get_text_config()

    @property
    def num_layers(self) -> int:
        return self.text_config.num_hidden_layers

    @property
    def num_heads(self) -> int:
        return self.text_config.num_attention_heads

    @property
    def num_kv_heads(self) -> int:
        return getattr(self.text_config, "num_key_value_heads", None) or self.num_heads

    @property
    def attn_implementation(self) -> str:
        return self.text_config._attn_implementation

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    # ---- inputs -----------------------------------------------------------------------------------------------
    @abstractmethod
    def prepare(self, frames: np.ndarray, segments: list[PromptSegment], *, option_letters=(), true_letter=None,
                non_option_includes_prefix: bool = True) -> PreparedInput:
        """Model inputs and `TokenLayout` for frames ``(T, H, W, 3)`` uint8 and named prompt segments."""

    def trace(self, prepared: PreparedInput, **kwargs):
        """An nnsight tracing context over one prepared input."""
        return self.model.trace(**prepared.inputs, **kwargs)

    def continuation_token_id(self, prefix_text: str, continuation: str) -> int:
        """The first token the model would read for ``continuation`` written right after ``prefix_text``.

        Tokenizing the pair (not the bare string) gets the piece a real prompt produces, e.g. ``A`` after ``(`` in
        SentencePiece vocabularies where the bare letter would be ``▁A``.
        """
        tok = self.tokenizer
        before = tok(prefix_text, add_special_tokens=False)["input_ids"]
        after = tok(prefix_text + continuation, add_special_tokens=False)["input_ids"]
        common = 0
        while common < min(len(before), len(after)) and before[common] == after[common]:
            common += 1
        if common >= len(after):
            raise ValueError(f"{continuation!r} adds no token after {prefix_text!r}")
        return int(after[common])

    # ---- load-time self-test ----------------------------------------------------------------------------------
    def self_test(self, prepared: PreparedInput) -> dict[str, float]:
        """An empty knockout must reproduce the clean logits exactly; a real knockout must change them."""
        layout = prepared.layout
        all_layers = range(self.num_layers)
        nothing = torch.zeros(layout.seq_len, layout.seq_len, dtype=torch.bool)
        cut = nothing.clone()
        video = torch.as_tensor(layout.positions("video"))
        cut[layout.last, video] = True
        with torch.no_grad():
            with self.trace(prepared):
                clean = self.lm_head.output[0, -1].save()
            with self.trace(prepared):
                apply_knockout(self.layers, nothing, all_layers)
                empty = self.lm_head.output[0, -1].save()
            with self.trace(prepared):
                apply_knockout(self.layers, cut, all_layers)
                knocked = self.lm_head.output[0, -1].save()
        empty_diff = float((empty - clean).abs().max())
        knock_diff = float((knocked - clean).abs().max())
        if empty_diff != 0.0:
            raise ModelLoadError(f"self-test failed for {self.path}: an empty knockout changed the logits by "
                                 f"{empty_diff:.3g} under attn_implementation={self.attn_implementation}")
        if not knock_diff > 0.0:
            raise ModelLoadError(f"self-test failed for {self.path}: cutting video->last in every layer left the "
                                 "logits unchanged, so the mask replacement does not reach attention")
        return {"empty_knockout_max_abs_diff": empty_diff, "video_to_last_max_abs_diff": knock_diff}

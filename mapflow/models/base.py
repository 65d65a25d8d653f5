"""The one model-adapter interface every analysis talks to.

An adapter wraps a Hugging Face video LLM in nnsight and gives its parts standard names (decoder ``layers``,
``attention(i)``, ``final_norm``, ``lm_head``), counts, and turns (frames, prompt segments) into model inputs plus an
exact `TokenLayout`. The input path is shared: the family renders the segments into the text its processor expects
(``render_prompt``), the model's own processor expands the video placeholder, and the family only says how many
feature tokens each frame unit has (``frame_sizes``). Everything downstream (flows, engine, studies) is family-free.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from nnsight import NNsight

from ..errors import LayoutError, ModelLoadError
from ..inputs.layout import TokenLayout
from ..inputs.prompts import VIDEO, McqaTemplate, PromptSegment, prompt_text
from ..inputs.tokenization import build_layout
from .attention_mask import apply_knockout

if TYPE_CHECKING:  # typing only: the backends sit above the models
    from ..backends.base import Backend


@dataclass
class PreparedInput:
    """Model inputs for one sample and where everything sits in them."""

    inputs: dict[str, torch.Tensor]
    layout: TokenLayout
    text: str
    segments: list[PromptSegment]


class VideoLLMAdapter(ABC):
    """Standard names over one family of HF video LLMs.

    Subclasses set `family`, `architectures`, `frame_unit` and `token_layout` (for `mapflow models`), and implement
    `language_model` and `frame_sizes`; chat models override `render_prompt`.
    """

    family: ClassVar[str]
    architectures: ClassVar[tuple[str, ...]]
    frame_unit: ClassVar[str] = "frame"
    token_layout: ClassVar[str] = ""  # one line: how the processor lays out the video tokens
    default_prompt_template: ClassVar[McqaTemplate | None] = None  # used when the checkpoint names none
    # Video-id tokens after the last frame unit that belong to no frame (LLaVA-OneVision's learned newline).
    trailing_video_tokens: ClassVar[int] = 0
    # Keyword arguments of the language model's call that a forward from the clean run's embeddings must be given
    # again (Qwen-VL's 3-D rotary positions are computed from input_ids and the video grid, which such a forward
    # does not have). See `suffix_language_model_kwargs`.
    clean_language_model_kwargs: ClassVar[tuple[str, ...]] = ()
    # Whether those arguments, given for one batch row, serve any number of rows (broadcast). Then a knockout batch
    # can add rows between decoder layers (see `mapflow.knockout.engine.run_batch`).
    suffix_kwargs_broadcast: ClassVar[bool] = True
    self_test_frames: int = 2  # frames of the load-time self-test clip (a checkpoint may need a fixed count)
    # Whether a frame's run for cross_frame also holds the text before its tokens (VideoLLaMA3, as the paper's code).
    frame_runs_with_markup: ClassVar[bool] = False
    # The frame sampling rule this family was analysed with in the paper (None: the benchmark's).
    default_frame_rule: ClassVar[str | None] = None
    # Where `mf.run` runs this model's traces when it is given no backend: `mf.load_model(path, remote=True)` sets an
    # NDIF backend (`mapflow.backends`). None: this process.
    backend: Backend | None = None

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

    @property
    def video_token_id(self) -> int:
        """The id the processor repeats for the video's feature tokens."""
        return self.processor.video_token_id

    def default_frame_size(self) -> int:
        """A frame side the vision tower accepts as is (for the self-test clip)."""
        size = getattr(self.hf_model.config.vision_config, "image_size", None)
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    # ---- inputs -----------------------------------------------------------------------------------------------
    def render_prompt(self, segments: list[PromptSegment]) -> list[PromptSegment]:
        """The segments as the text the processor gets, exactly one piece named ``video`` holding its placeholder.

        Default: the segments as they are (raw prompts such as LLaVA's ``USER: <video>…``).
        """
        placeholder = self.processor.video_token
        video = [s for s in segments if s.name == VIDEO]
        if len(video) != 1 or video[0].text != placeholder:
            raise LayoutError(f"the prompt needs exactly one '{VIDEO}' segment holding {placeholder!r}")
        return list(segments)

    @abstractmethod
    def frame_sizes(self, encoded) -> list[int]:
        """Feature tokens of each frame unit, in order, from the processor's output (grids, frame counts)."""

    def video_grid(self, encoded) -> tuple[int, int, int] | None:
        """(units, h, w) when every frame unit is one raster grid of the same shape, else None."""
        return None

    def video_processor_kwargs(self, frames: np.ndarray, timestamps) -> dict:
        """Extra keyword arguments of the processor call for this clip (``timestamps``: seconds per frame, or None)."""
        return {}

    def prepare(
        self,
        frames: np.ndarray,
        segments: list[PromptSegment],
        *,
        option_letters=(),
        true_letter=None,
        non_option_includes_prefix: bool = True,
        timestamps=None,
    ) -> PreparedInput:
        """Model inputs and `TokenLayout` for frames ``(T, H, W, 3)`` uint8 and named prompt segments
        (``timestamps``: each frame's time in the video, in seconds, for families that write it into the prompt)."""
        if sum(s.name == VIDEO for s in segments) != 1:
            raise LayoutError(
                f"the prompt needs exactly one '{VIDEO}' segment (found {sum(s.name == VIDEO for s in segments)})"
            )
        pieces = self.render_prompt(segments)
        text = prompt_text(pieces)
        placeholder = self.processor.video_token
        if (found := text.count(placeholder)) != 1:
            raise LayoutError(f"{placeholder!r} must occur exactly once in the prompt (found {found})")
        encoded = self.processor(
            text=text,
            videos=[np.asarray(frames)],
            return_tensors="pt",
            return_offsets_mapping=True,
            return_text_replacement_offsets=True,
            **self.video_processor_kwargs(np.asarray(frames), timestamps),
        )
        offsets = encoded.pop("offset_mapping")[0]
        expanded = _expand_video_piece(pieces, encoded.pop("text_replacement_offsets")[0])
        input_ids = encoded["input_ids"][0]
        layout = build_layout(
            expanded,
            prompt_text(expanded),
            input_ids.numpy(),
            offsets.numpy(),
            video_token_id=self.video_token_id,
            frame_sizes=self.frame_sizes(encoded),
            video_grid=self.video_grid(encoded),
            trailing_video_tokens=self.trailing_video_tokens,
            option_letters=option_letters,
            true_letter=true_letter,
            non_option_includes_prefix=non_option_includes_prefix,
            frame_runs_with_markup=self.frame_runs_with_markup,
        )
        return PreparedInput(inputs=self.model_inputs(encoded), layout=layout, text=text, segments=pieces)

    def model_inputs(self, encoded) -> dict:
        """The processor's tensors on the input device, pixels in the model's dtype (other floats, such as Qwen's
        seconds per temporal group that feed the rotary positions, stay in full precision)."""
        device, dtype = self.input_device, self.hf_model.dtype
        inputs = {}
        for key, value in encoded.items():
            if isinstance(value, torch.Tensor):
                pixels = key.startswith("pixel_values") and value.is_floating_point()
                value = value.to(device, dtype) if pixels else value.to(device)
            inputs[key] = value
        return inputs

    @property
    def input_device(self) -> torch.device:
        """Where inputs go: the embedding's device (the first one under a multi-device ``device_map``)."""
        return self.hf_model.get_input_embeddings().weight.device

    # ---- reuse of the clean run (engine) ------------------------------------------------------------------------
    def suffix_language_model_kwargs(self, clean_kwargs: dict, start: int, rows: int) -> dict:
        """The recorded clean keyword arguments cut to positions ``start..L-1`` and repeated for ``rows`` batch rows.

        Default: tensors whose last dim is the sequence and whose second-last is the batch (position ids).
        """
        out = {}
        for name, value in clean_kwargs.items():
            part = value[..., start:]
            out[name] = part.expand(*part.shape[:-2], rows, part.shape[-1])
        return out

    # ---- reading -------------------------------------------------------------------------------------------------
    def logit_lens(self, hidden: torch.Tensor) -> torch.Tensor:
        """Inside a trace: logits the model would give for a residual-stream state (final norm, then lm_head)."""
        return self.lm_head(self.final_norm(hidden))

    def trace(self, prepared: PreparedInput, **kwargs):
        """An nnsight tracing context over one prepared input."""
        return self.model.trace(**prepared.inputs, **kwargs)

    def continuation_token_id(self, prefix_text: str, continuation: str) -> int:
        """The first token the model would read for ``continuation`` written right after ``prefix_text``.

        Tokenizing the pair (not the bare string) gets the piece a real prompt produces, e.g. ``A`` after ``(`` in
        SentencePiece vocabularies where the bare letter would be ``▁A``. Where the pair's tokenization merges the
        continuation into the prompt's last token (byte-level BPE: ``:`` + ``A`` -> ``:A``), the model, whose prompt
        ends with the prompt's own tokens, reads the continuation's first token as tokenized on its own.
        """
        tok = self.tokenizer
        before = tok(prefix_text, add_special_tokens=False)["input_ids"]
        after = tok(prefix_text + continuation, add_special_tokens=False)["input_ids"]
        common = 0
        while common < min(len(before), len(after)) and before[common] == after[common]:
            common += 1
        if common >= len(after):
            raise ValueError(f"{continuation!r} adds no token after {prefix_text!r}")
        if common == len(before):  # the prompt's tokens stay as they are
            return int(after[common])
        alone = tok(continuation, add_special_tokens=False)["input_ids"]
        read = tok.decode(before + alone[:1])
        prompt = tok.decode(before)
        if alone and read.startswith(prompt) and read[len(prompt) :] and continuation.startswith(read[len(prompt) :]):
            return int(alone[0])
        raise ValueError(
            f"{continuation!r} merges into the last token of {prefix_text!r} and has no token of its own "
            "that follows the prompt; pass --gt-token vocab"
        )

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
            raise ModelLoadError(
                f"self-test failed for {self.path}: an empty knockout changed the logits by "
                f"{empty_diff:.3g} under attn_implementation={self.attn_implementation}"
            )
        if not knock_diff > 0.0:
            raise ModelLoadError(
                f"self-test failed for {self.path}: cutting video->last in every layer left the "
                "logits unchanged, so the mask replacement does not reach attention"
            )
        return {"empty_knockout_max_abs_diff": empty_diff, "video_to_last_max_abs_diff": knock_diff}


def _expand_video_piece(pieces: list[PromptSegment], replacements: list[dict]) -> list[PromptSegment]:
    """The pieces as the tokenizer saw them: the video placeholder replaced by the processor's expansion."""
    videos = [r for r in replacements if r["type"] == "video"]
    if len(videos) != 1 or len(replacements) != 1:
        raise LayoutError(
            f"expected the processor to expand exactly one video placeholder, it made "
            f"{[r['type'] for r in replacements]}"
        )
    start = sum(len(p.text) for p in pieces[: next(i for i, p in enumerate(pieces) if p.name == VIDEO)])
    if tuple(videos[0]["span"]) != (start, start + len(videos[0]["text"])):
        raise LayoutError(
            f"the processor expanded a video placeholder at characters {videos[0]['span']}, not the "
            f"video segment's at {start}"
        )
    return [PromptSegment(p.name, videos[0]["replacement"]) if p.name == VIDEO else p for p in pieces]

"""Prefill FLOPs of the (pruned) language model, counted from the config and the token counts the pruned forward runs.

What is counted: the language model's prefill only (decoder layers, final norm's matmuls: none, the LM head at the
last prompt position). The vision tower and projector cost the same for every pruning method and are not counted.
Only matrix products are counted, 2 FLOPs per multiply-add, as `torch.utils.flop_counter.FlopCounterMode` counts them
(elementwise work: norms, rotary, softmax, activations, residual adds, biases, is left out):

- projections: q, k, v, o of every position a layer runs on;
- attention: scores (q k^T) and the weighted sum (p v) of every row group as `mapflow.pruning.forward` executes it:
  a dense layer over n positions is one n x n rectangle per head (the causal half included: kernels and the
  counter count the full rectangle); a frame-local layer runs the rows before the video against those rows, each
  frame's video rows against [rows before the video + that frame], the other rows against all rows up to them;
- mlp: the gated MLP's three matrices (gate, up, down) per position;
- ranking ("least_attended"): the one extra matmul in layer L that sums the attention each key received over heads and
  ranking rows (heads x rows x keys multiply-adds);
- lm_head: hidden x vocab at the last position.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..inputs.layout import TokenLayout
from .attention import dense_group, frame_local_groups
from .forward import dropped_count, frame_index, kept_positions
from .spec import PruneSpec

PARTS = ("projections", "attention", "mlp", "ranking", "lm_head")


@dataclass
class FlopCount:
    """``total`` = sum of ``per_layer`` + the LM head; ``parts`` by kind (see the module notes); ``positions``: the
    number of sequence positions each decoder layer runs on."""

    total: int
    per_layer: list[int]
    parts: dict[str, int] = field(default_factory=dict)
    positions: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "per_layer": list(self.per_layer),
            "parts": dict(self.parts),
            "positions": list(self.positions),
        }


@dataclass(frozen=True)
class _Shapes:
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    layers: int

    @classmethod
    def of(cls, text_config) -> _Shapes:
        heads = text_config.num_attention_heads
        head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
        return cls(
            hidden=text_config.hidden_size,
            heads=heads,
            kv_heads=getattr(text_config, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            intermediate=text_config.intermediate_size,
            vocab=text_config.vocab_size,
            layers=text_config.num_hidden_layers,
        )


def prefill_flops(adapter_or_config, prepared_or_layout, spec: PruneSpec, *, kept=None) -> FlopCount:
    """FLOPs of the language model's prefill under ``spec`` (module notes: what is counted and what is not).

    ``adapter_or_config``: an adapter or a text config; ``prepared_or_layout``: a PreparedInput or its TokenLayout.
    ``kept``: the positions left after the drop, needed only for "least_attended" with frame-local layers after L
    (which frames keep how many tokens depends on the ranking; pass `PrunedPrefill.kept`)."""
    config = getattr(adapter_or_config, "text_config", adapter_or_config)
    shapes = _Shapes.of(config)
    layout: TokenLayout = getattr(prepared_or_layout, "layout", prepared_or_layout)
    length = layout.seq_len
    num_video = len(layout.positions("video"))
    drops = dropped_count(spec, num_video)
    drop_layer = spec.drop_after if drops else None
    frame_local = set(spec.frame_local_layers)
    if drop_layer is not None and any(layer > drop_layer for layer in frame_local):
        if spec.drop == "least_attended" and kept is None:
            raise ValueError("least_attended with frame-local layers after L: pass kept= (PrunedPrefill.kept)")
        if kept is None:
            kept = kept_positions(layout, spec, length)
    frame_of = frame_index(layout, length)
    video_start = int(layout["video"].start)
    full = torch.arange(length)
    parts = dict.fromkeys(PARTS, 0)
    per_layer, positions = [], []
    for layer in range(shapes.layers):
        after = drop_layer is not None and layer > drop_layer
        n = length - drops if after else length
        seq = (torch.as_tensor(kept) if kept is not None else None) if after else full
        if layer in frame_local:
            groups = frame_local_groups(seq, video_start, frame_of)
        else:
            groups = dense_group(n)
        proj = 2 * n * shapes.hidden * (2 * shapes.heads * shapes.head_dim + 2 * shapes.kv_heads * shapes.head_dim)
        pairs = sum(len(g.rows) * len(g.keys) for g in groups)
        attention = 4 * shapes.heads * shapes.head_dim * pairs
        mlp = 2 * n * 3 * shapes.hidden * shapes.intermediate
        ranking = 2 * shapes.heads * pairs if (spec.drop == "least_attended" and layer == drop_layer) else 0
        for name, value in (("projections", proj), ("attention", attention), ("mlp", mlp), ("ranking", ranking)):
            parts[name] += value
        per_layer.append(proj + attention + mlp + ranking)
        positions.append(n)
    parts["lm_head"] = 2 * shapes.hidden * shapes.vocab
    return FlopCount(total=sum(per_layer) + parts["lm_head"], per_layer=per_layer, parts=parts, positions=positions)

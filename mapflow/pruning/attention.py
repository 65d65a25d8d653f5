"""The attention a pruned forward runs in the layers where it differs from the model's own.

- Frame-local layers (prefill): the query rows are split into groups, each computed against only the keys it may
  read, by an explicit softmax per group:
  rows before the video -> the keys before the video (causal); each frame's video rows -> the keys before the video and
  that frame's own tokens (causal inside the frame); every other row (markup between frames, text after the video,
  generated tokens) -> all keys up to itself. No (rows, keys) score matrix of the whole sequence is formed.
- The ranking layer of "least_attended" (layer L of a FastV-style plan): the same explicit softmax over all rows and
  keys (one group), and the attention each key received, summed over heads and over the ranking query rows, by one
  matmul of a row-weight vector with the probabilities.
- Every other layer and every decoding step (one query row): the model's own attention function, with the mask the
  pruned forward's layer hook cut to the kept positions.

`PruneAttention` is registered with transformers' AttentionInterface only inside `pruning_attention` (removed on exit,
the config's implementation restored).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch

ATTENTION_NAME = "mapflow_prune"


@dataclass
class RowGroup:
    """Query rows ``rows`` (indices into the layer's sequence) attend keys ``keys``; causal by original position."""

    rows: torch.Tensor
    keys: torch.Tensor


def frame_local_groups(positions: torch.Tensor, video_start: int, frame_of: torch.Tensor) -> list[RowGroup]:
    """Row groups of a frame-local layer over a sequence holding the original ``positions`` (sorted).

    ``frame_of``: each position's frame index in the full prompt (-1: not a video token)."""
    index = torch.arange(len(positions))
    before = index[positions < video_start]
    frames = frame_of[positions]
    groups = [RowGroup(before, before)] if len(before) else []
    for frame in torch.unique(frames[frames >= 0]).tolist():
        own = index[frames == frame]
        groups.append(RowGroup(own, torch.cat([before, own])))
    others = index[(positions >= video_start) & (frames < 0)]
    if len(others):
        groups.append(RowGroup(others, index[: int(others.max()) + 1]))
    return groups


def dense_group(length: int) -> list[RowGroup]:
    index = torch.arange(length)
    return [RowGroup(index, index)]


def grouped_attention(module, query, key, value, groups: list[RowGroup], scaling: float, rank_weights=None):
    """Attention of ``query`` (1, heads, n, d) over ``key``/``value`` (1, kv_heads, n, d) in row groups, as the model's
    eager attention computes it (scores in the input dtype, softmax in float32; a float64
    model's in float64, so that it can be held to a float64 reference).

    Returns (output (1, n, heads, d), received (n,) or None): ``received[k]`` = attention probability key k got,
    summed over heads and over the rows weighted by ``rank_weights`` (n,) (given only in the ranking layer)."""
    heads = query.shape[1]
    softmax_dtype = torch.promote_types(query.dtype, torch.float32)  # eager's float32 softmax; float64 stays float64
    group_size = heads // key.shape[1]
    key = key.repeat_interleave(group_size, 1) if group_size > 1 else key
    value = value.repeat_interleave(group_size, 1) if group_size > 1 else value
    out = query.new_empty(query.shape)
    received = None if rank_weights is None else torch.zeros(heads, query.shape[2], dtype=torch.float32)
    for group in groups:
        q, k, v = query[:, :, group.rows], key[:, :, group.keys], value[:, :, group.keys]
        scores = torch.matmul(q, k.transpose(2, 3)) * scaling
        blocked = group.keys[None, :] > group.rows[:, None]  # causal by position (rows/keys index a sorted sequence)
        if bool(blocked.any()):
            scores = scores.masked_fill(blocked, float("-inf"))
        probs = torch.softmax(scores, dim=-1, dtype=softmax_dtype).to(query.dtype)
        out[:, :, group.rows] = torch.matmul(probs, v)
        if rank_weights is not None:
            weights = rank_weights[group.rows].to(probs.dtype)
            # (heads, 1, rows) @ (heads, rows, keys): what each key received from the ranking rows, per head
            got = torch.matmul(weights.expand(heads, 1, -1), probs[0])[:, 0]
            received[:, group.keys] += got.float()
    return out.transpose(1, 2).contiguous(), None if received is None else received.sum(0)


@dataclass
class PruneAttention:
    """What the registered attention function does per layer, for one pruned forward (set by the forward)."""

    previous: str  # the model's own implementation name
    frame_local_layers: frozenset[int] = frozenset()
    rank_layer: int | None = None  # the least_attended ranking layer (L)
    # set per prefill call by the forward: the layer's sequence as original positions, the row groups
    groups_for: object = None  # callable(layer) -> list[RowGroup] for frame-local layers
    rank_weights: torch.Tensor | None = None
    received: torch.Tensor | None = None  # written by the ranking layer
    prefill: bool = True
    calls: list = field(default_factory=list)

    def own(self, module):
        """The attention function the model would call (eager: the model module's own)."""
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        if self.previous != "eager":
            return ALL_ATTENTION_FUNCTIONS[self.previous]
        return sys.modules[type(module).__module__].eager_attention_forward

    def __call__(self, module, query, key, value, attention_mask, *, scaling=None, dropout=0.0, **kwargs):
        layer = module.layer_idx
        scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
        if self.prefill and query.shape[2] == key.shape[2] and query.shape[2] > 1:
            if layer in self.frame_local_layers:
                rank = self.rank_weights if layer == self.rank_layer else None
                out, received = grouped_attention(
                    module, query, key, value, self.groups_for(layer, query.shape[2]), scaling, rank
                )
                if received is not None:
                    self.received = received
                return out, None
            if layer == self.rank_layer:
                out, self.received = grouped_attention(
                    module, query, key, value, dense_group(query.shape[2]), scaling, self.rank_weights
                )
                return out, None
        return self.own(module)(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)


class pruning_attention:  # noqa: N801 (used like a function)
    """Within the block the language model's layers call ``attention`` (the text config is shared by them); the
    registrations are removed and the config's implementation restored on exit, also on error."""

    def __init__(self, text_config, attention: PruneAttention):
        self.text_config = text_config
        self.attention = attention

    def __enter__(self):
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

        self.mappings = (
            (AttentionInterface._global_mapping, self.attention),
            (type(ALL_MASK_ATTENTION_FUNCTIONS)._global_mapping, ALL_MASK_ATTENTION_FUNCTIONS[self.attention.previous]),
        )
        self.saved = [mapping.get(ATTENTION_NAME) for mapping, _ in self.mappings]
        for mapping, function in self.mappings:
            mapping[ATTENTION_NAME] = function
        self.text_config._attn_implementation = ATTENTION_NAME
        return self

    def __exit__(self, *exc):
        self.text_config._attn_implementation = self.attention.previous
        for (mapping, _), saved in zip(self.mappings, self.saved):
            if saved is None:
                mapping.pop(ATTENTION_NAME, None)
            else:
                mapping[ATTENTION_NAME] = saved
        return False

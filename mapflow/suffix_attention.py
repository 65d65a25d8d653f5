"""Attention for a batch of knockout rows computed on top of one shared clean prefix, without copying or masking
what need not be copied or masked.

A batch computes query positions ``start..L-1`` (the suffix) for many configurations (rows). Every row attends to the
same clean keys/values of positions ``< start`` (the prefix) and to its own suffix keys. Attention over the two key
ranges is computed separately and merged exactly through their log-sum-exp (as flash attention merges key blocks):

- the prefix keys are the clean cache viewed once and broadcast over rows (stride 0): no per-row copy;
- a row that does not cut edges in a layer needs no mask at all: the prefix part is unmasked and the suffix part is
  plain causal (the fast ``is_causal`` kernel);
- a row that cuts edges gets its pattern's additive bias (one ``(S, P)`` and one ``(S, S)`` tensor per distinct
  blocked pattern, shared by every row and layer that cuts it, broadcast over heads): no ``(heads, N, N)`` masks.

On CPU both parts run torch's flash kernel, which returns the log-sum-exp; elsewhere an explicit (chunked) softmax.
The function is registered with transformers under `ATTENTION_NAME` and switched on only inside `suffix_attention`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

ATTENTION_NAME = "mapflow_suffix"
# Query rows per chunk of the explicit-softmax fallback: bounds its (rows, heads, chunk, keys) score tensor.
MATH_QUERY_CHUNK = 256


@dataclass
class MaskPattern:
    """One blocked-edge pattern cut to the suffix queries: additive biases for the prefix and the suffix keys."""

    prefix_bias: torch.Tensor | None  # (1, 1, S, P), 0 or -inf; None: no prefix key blocked
    suffix_bias: torch.Tensor | None  # (1, 1, S, S), causal and the cut edges; None: plain causal
    prefix_empty: torch.Tensor | None  # (S,) bool: queries whose every prefix key is blocked; None: no such query
    suffix_empty: torch.Tensor | None

    @classmethod
    def from_suffix_rows(cls, rows: torch.Tensor, start: int, dtype: torch.dtype, device) -> "MaskPattern":
        """``rows``: (S, L) bool, the blocked matrix's rows ``start..L-1``, True = query may not read key."""
        rows = rows.to(device)
        size = rows.shape[0]
        causal = torch.ones(size, size, dtype=torch.bool, device=device).tril()
        allowed_prefix = ~rows[:, :start]
        allowed_suffix = causal & ~rows[:, start:]
        prefix_cut = start > 0 and not bool(allowed_prefix.all())
        suffix_cut = bool(rows[:, start:].any())
        return cls(
            prefix_bias=_bias(allowed_prefix, dtype) if prefix_cut else None,
            suffix_bias=_bias(allowed_suffix, dtype) if suffix_cut else None,
            prefix_empty=_empty_queries(allowed_prefix) if prefix_cut else None,
            suffix_empty=_empty_queries(allowed_suffix) if suffix_cut else None,
        )


def _bias(allowed: torch.Tensor, dtype) -> torch.Tensor:
    bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return bias.masked_fill_(~allowed, float("-inf"))[None, None]


def _empty_queries(allowed: torch.Tensor) -> torch.Tensor | None:
    empty = ~allowed.any(-1)
    return empty if bool(empty.any()) else None


@dataclass
class SuffixBatch:
    """What the attention function needs for one batch: the shared prefix and, per layer, which rows cut what."""

    start: int
    prefix_keys: list[torch.Tensor]  # per layer (1, kv_heads, start, head_dim): views of the clean cache
    prefix_values: list[torch.Tensor]
    patterns: list[MaskPattern]
    # per layer: (row indices or None for all rows, pattern index or None for uncut rows)
    groups: list[list[tuple[torch.Tensor | None, int | None]]]

    @classmethod
    def build(cls, start: int, keys, values, row_patterns: list[torch.Tensor], row_layers: list[tuple[int, ...]],
              row_entries: list[int], dtype, device) -> "SuffixBatch":
        """``row_patterns``: each row's (L, L) blocked matrix (rows with equal matrices share one `MaskPattern`);
        ``row_layers``: the layers it cuts; ``row_entries``: ascending, the layer where it joins the batch (a layer
        computes the rows that joined at or before it, in row order)."""
        unique: list[torch.Tensor] = []
        pattern_of_row = []
        for blocked in row_patterns:
            suffix_rows = blocked[start:]
            found = next((j for j, u in enumerate(unique) if u is suffix_rows or torch.equal(u, suffix_rows)), None)
            if found is None:
                unique.append(suffix_rows)
                found = len(unique) - 1
            pattern_of_row.append(found)
        patterns = [MaskPattern.from_suffix_rows(u, start, dtype, device) for u in unique]
        groups = []
        for layer in range(len(keys)):
            rows = sum(entry <= layer for entry in row_entries)
            by_key: dict[int | None, list[int]] = {}
            for r in range(rows):
                by_key.setdefault(pattern_of_row[r] if layer in row_layers[r] else None, []).append(r)
            groups.append([(None if len(members) == rows else torch.tensor(members, device=device), key)
                           for key, members in by_key.items()])
        return cls(start, [k[:, :, :start] for k in keys], [v[:, :, :start] for v in values], patterns, groups)


def _attend_part(q, k, v, bias, causal: bool, scale: float):
    """(output, log-sum-exp over keys) of one key range; a query with no allowed key gives output 0."""
    if q.device.type == "cpu":
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, attn_mask=bias,
                                                                          scale=scale)
    return _attend_part_math(q, k, v, bias, causal, scale)


def _attend_part_math(q, k, v, bias, causal: bool, scale: float):
    """The same as the CPU flash kernel, by an explicit softmax over query chunks (any device)."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    outs, lses = [], []
    for lo in range(0, q.shape[2], MATH_QUERY_CHUNK):
        hi = min(lo + MATH_QUERY_CHUNK, q.shape[2])
        scores = (q[:, :, lo:hi].float() @ k.float().transpose(-1, -2)) * scale
        if bias is not None:
            scores = scores + bias[..., lo:hi, :].float()
        if causal:  # square: query lo+i sees keys 0..lo+i
            scores = scores.masked_fill(
                torch.ones(hi - lo, k.shape[2], dtype=torch.bool, device=q.device).triu(lo + 1), float("-inf"))
        lse = scores.logsumexp(-1)
        probs = torch.exp(scores - lse.masked_fill(lse == float("-inf"), 0)[..., None])
        outs.append((probs @ v.float()).to(q.dtype))
        lses.append(lse)
    return torch.cat(outs, 2), torch.cat(lses, 2)


def _attend(q, k, v, prefix_k, prefix_v, pattern: MaskPattern | None, scale: float) -> torch.Tensor:
    rows = q.shape[0]
    suffix_bias = pattern.suffix_bias if pattern is not None else None
    out, lse = _attend_part(q, k, v, suffix_bias, suffix_bias is None, scale)
    if prefix_k.shape[2] == 0:
        return out
    prefix_bias = pattern.prefix_bias if pattern is not None else None
    p_out, p_lse = _attend_part(q, prefix_k.expand(rows, -1, -1, -1), prefix_v.expand(rows, -1, -1, -1),
                                prefix_bias, False, scale)
    if pattern is not None:  # the flash kernel reports log-sum-exp 0 for a query with no allowed key
        if pattern.suffix_empty is not None:
            lse = lse.masked_fill(pattern.suffix_empty, float("-inf"))
        if pattern.prefix_empty is not None:
            p_lse = p_lse.masked_fill(pattern.prefix_empty, float("-inf"))
    top = torch.maximum(lse, p_lse)
    w, p_w = torch.exp(lse - top)[..., None], torch.exp(p_lse - top)[..., None]
    return ((out.float() * w + p_out.float() * p_w) / (w + p_w)).to(q.dtype)


def suffix_attention_forward(module, query, key, value, attention_mask, *, scaling=None, dropout=0.0,
                             suffix_batch: SuffixBatch | None = None, **kwargs):
    """transformers attention-function signature; ``query`` (rows, heads, S, d), ``key``/``value`` the suffix's own
    (rows, kv_heads, S, d). Returns (rows, S, heads, d) and no weights."""
    if suffix_batch is None:
        raise RuntimeError(f"attention '{ATTENTION_NAME}' needs the suffix_batch keyword (see mapflow.engine)")
    layer = module.layer_idx
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    prefix_k, prefix_v = suffix_batch.prefix_keys[layer], suffix_batch.prefix_values[layer]
    groups = suffix_batch.groups[layer]
    if len(groups) == 1 and groups[0][0] is None:
        pattern = groups[0][1]
        out = _attend(query, key, value, prefix_k, prefix_v,
                      None if pattern is None else suffix_batch.patterns[pattern], scale)
    else:
        out = torch.empty_like(query)
        for rows, pattern in groups:
            out[rows] = _attend(query[rows], key[rows], value[rows], prefix_k, prefix_v,
                                None if pattern is None else suffix_batch.patterns[pattern], scale)
    return out.transpose(1, 2).contiguous(), None


def _no_mask(*args, **kwargs):
    return None  # the attention function builds what it needs from the SuffixBatch


def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(ATTENTION_NAME, suffix_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_NAME, _no_mask)


@contextmanager
def suffix_attention(text_config):
    """Within the block the language model's layers call `suffix_attention_forward` (the config is shared by them)."""
    register()
    previous = text_config._attn_implementation
    text_config._attn_implementation = ATTENTION_NAME
    try:
        yield
    finally:
        text_config._attn_implementation = previous

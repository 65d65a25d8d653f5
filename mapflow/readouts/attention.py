"""Attention probabilities for a few chosen query rows (paper Fig. 5 / Fig. U), without full attention tensors.

Inside the trace we read the (post-rotary) queries and keys each layer hands its attention function and recompute
``softmax(q k^T * scale)`` for the chosen rows only, under the causal mask and any knockout. This works under every
attention implementation (sdpa returns no weights) and keeps (rows x keys) per layer instead of (heads x N x N).
Models with attention logit soft-capping or sliding windows are not covered by this recomputation.
"""

from __future__ import annotations

import nnsight
import torch

from ..knockout.masks import apply_layer_masks
from ..models.base import PreparedInput, VideoLLMAdapter

HEAD_POOLS = ("mean", "max")


def attention_rows(
    adapter: VideoLLMAdapter,
    prepared: PreparedInput,
    query_positions,
    key_positions,
    *,
    blocked: torch.Tensor | None = None,
    knockout_layers=(),
    head_pool: str = "mean",
    layers=None,
) -> torch.Tensor:
    """Attention (len(layers), len(query_positions), len(key_positions)) pooled over heads.

    ``blocked`` (L, L) bool is cut in ``knockout_layers`` (the same knockout the studies use), and the recomputed
    probabilities respect it in those layers.
    """
    if head_pool not in HEAD_POOLS:
        raise ValueError(f"head_pool must be one of {HEAD_POOLS}, got '{head_pool}'")
    layers = list(range(adapter.num_layers) if layers is None else layers)
    queries = torch.as_tensor(list(query_positions), dtype=torch.long)
    keys = torch.as_tensor(list(key_positions), dtype=torch.long)
    seq_len = prepared.layout.seq_len
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()
    knocked = set(knockout_layers) if blocked is not None else set()
    allowed_clean = causal[queries]
    allowed_knocked = (causal & ~blocked)[queries] if blocked is not None else allowed_clean
    group = adapter.num_heads // adapter.num_kv_heads
    wanted = set(layers)
    with torch.no_grad(), adapter.trace(prepared):
        rows = []
        for i in range(max(wanted | knocked) + 1):  # in execution order: a layer's mask, then its attention
            if i in knocked:
                apply_layer_masks(adapter.layers, {i: blocked})
            if i not in wanted:
                continue
            module = adapter.hf_model_attention(i)
            args, _ = adapter.attention_call(i).inputs
            q = args[1][0][:, queries].float()  # (heads, rows, head_dim)
            k = args[2][0].float().repeat_interleave(group, dim=0)  # (heads, N, head_dim)
            scores = (q @ k.transpose(-1, -2)) * module.scaling
            allowed = allowed_knocked if i in knocked else allowed_clean
            probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)[:, :, keys]
            rows.append(probs.mean(0) if head_pool == "mean" else probs.amax(0))
        out = nnsight.save(rows)
    return torch.stack([r.detach() for r in out])

"""Attention knockout inside an nnsight trace: replace the attention mask a decoder layer receives.

Every decoder layer gets its mask as the ``attention_mask`` keyword. transformers builds it once and hands the same
tensor to all layers, so we never edit it in place: each knocked-out layer gets a fresh mask.

- ``eager``: the mask is additive float ``(B, 1, Lq, Lk)``; blocked entries get ``finfo.min`` (as the causal part does).
- ``sdpa`` without padding: the mask is ``None`` and SDPA runs with ``is_causal``; we pass an explicit boolean mask
  (True = may attend), which gives bit-identical results when nothing is blocked.
"""

from __future__ import annotations

import torch


def knockout_attention_mask(original, blocked: torch.Tensor, device=None) -> torch.Tensor:
    """The mask a layer should receive so that the edges in ``blocked`` are cut.

    ``blocked``: bool ``(Lq, Lk)`` or ``(B, Lq, Lk)`` (one mask shared by all heads) or ``(B, H, Lq, Lk)`` (per head,
    see `head_blocked`), True = query row may not read key column. With ``Lq < Lk`` the rows are the last ``Lq``
    queries (a suffix computed on top of a cached prefix). ``device``: where the layer runs (under a multi-device
    ``device_map`` each layer may sit on another GPU); default: the original mask's.
    """
    if device is not None:
        blocked = blocked.to(device)
    if blocked.dim() == 2:
        blocked = blocked[None]
    if blocked.dim() == 3:
        blocked = blocked[:, None]  # one mask shared by all heads
    q_len, k_len = blocked.shape[-2:]
    if original is None:
        causal = torch.ones(k_len, k_len, dtype=torch.bool, device=blocked.device).tril()[k_len - q_len :]
        return causal & ~blocked
    if original.dtype == torch.bool:
        return original & ~blocked.to(original.device)
    blocked = blocked.to(original.device)
    shape = torch.broadcast_shapes(original.shape[:2], blocked.shape[:2]) + tuple(original.shape[2:])
    fresh = original.expand(shape).clone()
    return fresh.masked_fill(blocked, torch.finfo(fresh.dtype).min)


def head_blocked(blocked: torch.Tensor, heads, num_heads: int) -> torch.Tensor:
    """``blocked`` (Lq, Lk) cut in the listed query heads only: (1, num_heads, Lq, Lk), other heads uncut."""
    out = torch.zeros(1, num_heads, *blocked.shape, dtype=torch.bool, device=blocked.device)
    out[0, list(heads)] = blocked
    return out


def apply_knockout(layers, blocked: torch.Tensor, layer_indices) -> None:
    """Inside a trace: give each listed decoder layer a mask with ``blocked`` edges cut."""
    apply_layer_masks(layers, {i: blocked for i in layer_indices})


def apply_layer_masks(layers, blocked_by_layer: dict) -> None:
    """Inside a trace: layer ``i`` gets a mask with its own ``blocked_by_layer[i]`` edges cut.

    ``layers`` is the adapter's envoy list of decoder layers. Layers are visited in ascending order because nnsight
    interleaves with execution and cannot go back to a layer that already ran.
    """
    for i in sorted(blocked_by_layer):
        args, kwargs = layers[i].inputs
        kwargs = dict(kwargs)
        kwargs["attention_mask"] = knockout_attention_mask(
            kwargs.get("attention_mask"), blocked_by_layer[i], layer_device(args, kwargs)
        )
        layers[i].inputs = (args, kwargs)


def layer_device(args, kwargs) -> torch.device:
    """The device of a decoder layer's hidden states (its positional or keyword input)."""
    hidden = args[0] if args else kwargs["hidden_states"]
    return hidden.device

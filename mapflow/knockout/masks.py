"""Attention knockout inside an nnsight trace: the mask primitives live with the models
(`mapflow.models.attention_mask`, the adapter's own load-time self-test uses them); the knockout layer imports
them from here."""

from __future__ import annotations

from ..models.attention_mask import (  # noqa: F401  (the knockout layer's names)
    apply_knockout,
    apply_layer_masks,
    head_blocked,
    knockout_attention_mask,
    layer_device,
)

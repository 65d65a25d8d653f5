"""Knockout layer: flows between spans (`flows`), the attention masks they become (`masks`, whose primitives live in
`mapflow.models.attention_mask`), the exact sweep engine (`engine`) with its memory `planner`, the suffix-attention
fast path (`suffix_attention`), one sample's cells (`cells`), the approximate `screen` with its `calibrate` measures,
and half-precision tolerances (`precision`).

The names of the former ``mapflow.knockout`` module (now `masks`) and of `flows` import from here too."""

from .._reexport import reexport

__getattr__ = reexport(__name__, ("masks", "flows"))

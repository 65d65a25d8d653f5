"""Knockout layer: flows between spans (`flows`), the attention masks they become (`masks`, whose primitives live in
`mapflow.models.attention_mask`), the exact sweep engine (`engine`) with its memory `planner`, the suffix-attention
fast path (`suffix_attention`), one sample's cells (`cells`), the approximate `screen` with its agreement measures
(`screen_agreement`), half-precision tolerances (`precision`) and the naive-vs-optimized sweep measurement of
``mapflow bench`` (`sweep_bench`). Import names from their module, e.g. ``from mapflow.knockout.flows import Flow``."""

"""Greedy generation, optionally under a knockout, and inputs extended by generated tokens.

Used where the paper shows text (Table 2's answers under cross-frame blocking) and where an analysis reads a position
inside the model's own response (the verb anchors of appendix C.2). Each step is one full forward of the grown input
(no KV cache): the knocked-out edges stay cut for the prompt positions in every step. Generated tokens inherit the
last prompt row's cuts over the prompt keys and read each other freely, as the paper's ``generate_with_attn_block``
does (its incremental mask copies the precomputed mask's last row for every new query); so under a flow into
``last`` the generated tokens cannot read what the last position may not. ``generated_rows="free"`` lets them read
every prompt key instead. The two agree for flows whose blocked rows exclude the last position.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..knockout.engine import KnockoutConfig, run_naive
from ..models.base import PreparedInput, VideoLLMAdapter


def extend_input(prepared: PreparedInput, new_ids, **extra_spans) -> PreparedInput:
    """``prepared`` with ``new_ids`` appended to the text (the layout grows; ``last`` moves to the new end)."""
    new_ids = torch.as_tensor(list(new_ids), dtype=torch.long)
    if new_ids.numel() == 0 and not extra_spans:
        return prepared
    inputs = dict(prepared.inputs)
    ids = inputs["input_ids"]
    inputs["input_ids"] = torch.cat([ids, new_ids.to(ids.device)[None]], dim=1)
    if inputs.get("attention_mask") is not None:
        mask = inputs["attention_mask"]
        inputs["attention_mask"] = torch.cat([mask, mask.new_ones(1, new_ids.numel())], dim=1)
    layout = prepared.layout.with_spans(inputs["input_ids"].shape[1], **extra_spans)
    return replace(prepared, inputs=inputs, layout=layout)


GENERATED_ROWS = ("inherit_last", "free")


def pad_blocked(blocked: torch.Tensor, seq_len: int, generated_rows: str = "inherit_last") -> torch.Tensor:
    """A prompt-sized block matrix grown to ``seq_len``. New columns block nothing; new rows copy the last prompt
    row over the prompt keys (``inherit_last``, the released code) or block nothing (``free``)."""
    if generated_rows not in GENERATED_ROWS:
        raise ValueError(f"generated_rows must be one of {GENERATED_ROWS}, got '{generated_rows}'")
    grown = torch.zeros(seq_len, seq_len, dtype=torch.bool)
    n = blocked.shape[0]
    grown[:n, :n] = blocked
    if generated_rows == "inherit_last":
        grown[n:, :n] = blocked[n - 1]
    return grown


def greedy_generate(
    adapter: VideoLLMAdapter,
    prepared: PreparedInput,
    *,
    max_new_tokens: int = 20,
    blocked: torch.Tensor | None = None,
    layers=(),
    generated_rows: str = "inherit_last",
) -> list[int]:
    """Token ids chosen greedily after the prompt (stops at the end-of-sequence token); ``generated_rows`` as
    `pad_blocked`."""
    eos = adapter.tokenizer.eos_token_id
    generated: list[int] = []
    current = prepared
    for _ in range(max_new_tokens):
        config = None
        if blocked is not None and layers:
            config = KnockoutConfig(pad_blocked(blocked, current.layout.seq_len, generated_rows), tuple(layers))
        token = int(run_naive(adapter, current, config).argmax())
        if token == eos:
            break
        generated.append(token)
        current = extend_input(prepared, generated)
    return generated

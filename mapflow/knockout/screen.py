"""The screen: a first-order estimate of every knockout cell from one clean forward and one backward pass.

For a flow (blocked edges ``B``, optionally some heads only) and a layer ``l``, the *exact local change* of the
layer's attention output is recomputed from the clean queries, keys and values: the affected query rows get the
softmax renormalised over the keys they may still read (not a linearised softmax, so saturated attention is handled),
minus their clean attention. The gradient of the metric (log-probability of the answer token at the last position)
at that attention output, dotted with the change, is the layer's first-order effect; a window's estimate is the sum
over its layers. The metric is the answer's log-odds (default; a log-probability's gradient vanishes when the model is
confident) or its log-probability; the estimated change becomes a probability through the metric's inverse, so the
stored ``rel_change`` stays within the probability range.

It is a screen, not a measurement: it ignores interactions between the window's layers and second-order effects. The
exact engine checks it (`--plan screen+verify K`, `mapflow calibrate`).

The attention function of every layer is swapped for a recorder (registered with transformers like
`mapflow.knockout.suffix_attention`) that calls the model's own implementation and keeps its inputs and output; the forward
runs with the parameters frozen, so the graph starts at the first layer's attention output (the vision tower builds
none).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..errors import KnockoutConfigError

RECORD_NAME = "mapflow_screen"
SCREEN = "screen"
VERIFY = "screen+verify"


def parse_plan(plan: str) -> tuple[str, int]:
    """``auto`` / ``naive`` / ``screen`` / ``screen+verify K`` -> (method, K); K = 0 without verification."""
    text = " ".join(str(plan).replace(":", " ").replace("=", " ").split())
    if text in ("auto", "naive", SCREEN):
        return text, 0
    if text.startswith(VERIFY):
        count = text[len(VERIFY) :].strip()
        if count.isdigit() and int(count) >= 1:
            return VERIFY, int(count)
    raise KnockoutConfigError(f"--plan '{plan}': choose auto, naive, screen or 'screen+verify K' (K >= 1)")


@dataclass
class ScreenForward:
    """The clean forward as the screen needs it."""

    logits: torch.Tensor  # (V,) at the last position, float32
    queries: list[torch.Tensor]  # per layer (heads, L, d), post-rotary, kv heads repeated to the query heads
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    scales: list[float]
    outputs: list[torch.Tensor]  # per layer the attention output (1, L, heads, d) in the autograd graph

    def gradients(self, tokens: list[int], metric: str = "logodds") -> list[list[torch.Tensor]]:
        """Per token: per layer the gradient of its metric (`metric_value`) at the attention output, (L, heads, d).
        One backward pass per distinct token."""
        distinct = list(dict.fromkeys(int(t) for t in tokens))
        found = {}
        for n, token in enumerate(distinct):
            grads = torch.autograd.grad(
                metric_value(self.logits_graph, token, metric),
                self.outputs,
                retain_graph=n < len(distinct) - 1,
                allow_unused=True,
            )
            found[token] = [torch.zeros_like(o[0]) if g is None else g[0].detach() for g, o in zip(grads, self.outputs)]
        return [found[int(t)] for t in tokens]

    logits_graph: torch.Tensor | None = None


METRICS = ("logodds", "logp")


def metric_value(logits: torch.Tensor, token: int, metric: str = "logodds") -> torch.Tensor:
    """``logp``: log p(token); ``logodds``: log p - log(1 - p). The log-odds keep a gradient when the model is
    confident (p near 1, where d log p vanishes: the saturation that makes a log-probability screen see nothing)."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if metric == "logp":
        return logits.log_softmax(-1)[token]
    if metric == "logodds":
        others = torch.cat([logits[:token], logits[token + 1 :]])
        return logits[token] - others.logsumexp(-1)
    raise KnockoutConfigError(f"screen metric '{metric}': choose one of {', '.join(METRICS)}")


def probability_after(logits: torch.Tensor, token: int, change, metric: str = "logodds"):
    """The probability of ``token`` that a first-order metric change ``change`` (array) implies, from the clean
    ``logits`` (the clean metric is taken from the logits, not from a probability that float32 rounds to 1)."""
    import numpy as np

    value = float(metric_value(logits.double(), token, metric)) + np.asarray(change, dtype=np.float64)
    return np.exp(value) if metric == "logp" else 1.0 / (1.0 + np.exp(-value))


def _own_implementation(module, previous: str):
    """The attention function the model would call under ``previous`` (eager: the model module's own)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if previous != "eager":
        return ALL_ATTENTION_FUNCTIONS[previous]
    own = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    return own or ALL_ATTENTION_FUNCTIONS["sdpa"]


@contextmanager
def recording_attention(text_config, record: dict, add: dict | None = None):
    """Within the block every layer's attention function records (query, key, value, output, scale) into
    ``record[layer]``; ``add[layer]`` (L, heads, d), if given, is added to that layer's attention output (the
    finite-difference check of the screen uses it)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    previous = text_config._attn_implementation

    def forward(module, query, key, value, attention_mask, *, scaling=None, **kwargs):
        out, weights = _own_implementation(module, previous)(
            module, query, key, value, attention_mask, scaling=scaling, **kwargs
        )
        if not out.requires_grad:  # the first layer's output: the graph starts here
            out = out.detach().requires_grad_()
        if add is not None and module.layer_idx in add:
            out = out + add[module.layer_idx].to(out.dtype)
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        record[module.layer_idx] = (query, key, value, out, scale)
        return out, weights

    AttentionInterface.register(RECORD_NAME, forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(RECORD_NAME, ALL_MASK_ATTENTION_FUNCTIONS[previous])
    text_config._attn_implementation = RECORD_NAME
    try:
        yield
    finally:
        text_config._attn_implementation = previous


@contextmanager
def frozen_parameters(model: torch.nn.Module):
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)


def screen_forward(adapter, prepared, add: dict | None = None) -> ScreenForward:
    """One clean forward (graph kept from the first attention output on) recording every layer's attention."""
    record: dict = {}
    with (
        torch.enable_grad(),
        frozen_parameters(adapter.hf_model),
        recording_attention(adapter.text_config, record, add),
    ):
        logits = adapter.hf_model(**prepared.inputs, use_cache=False, logits_to_keep=1).logits[0, -1]
    layers = sorted(record)
    if layers != list(range(adapter.num_layers)):
        raise RuntimeError(f"the screen recorded attention in layers {layers}, expected 0..{adapter.num_layers - 1}")
    group = adapter.num_heads // adapter.num_kv_heads
    q, k, v, out, scale = zip(*(record[i] for i in layers))
    return ScreenForward(
        logits=logits.detach().float(),
        queries=[x[0].detach() for x in q],
        keys=[x[0].detach().repeat_interleave(group, 0) for x in k],
        values=[x[0].detach().repeat_interleave(group, 0) for x in v],
        scales=list(scale),
        outputs=list(out),
        logits_graph=logits,
    )


def local_change(
    fwd: ScreenForward, layer: int, blocked: torch.Tensor, heads=None, rows: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, change (rows, heads, d)): the exact change of layer ``layer``'s attention output at the query rows the
    flow cuts, when its edges are removed from clean inputs (renormalised softmax over the remaining keys)."""
    rows = torch.nonzero(blocked.any(-1)).flatten() if rows is None else rows
    q, k, v = fwd.queries[layer], fwd.keys[layer], fwd.values[layer]
    dtype = torch.promote_types(q.dtype, torch.float32)
    seq_len = k.shape[1]
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=q.device).tril()[rows]
    scores = (q[:, rows].to(dtype) @ k.to(dtype).transpose(-1, -2)) * fwd.scales[layer]
    clean = scores.masked_fill(~causal, float("-inf")).softmax(-1)
    knocked = scores.masked_fill(~(causal & ~blocked.to(q.device)[rows]), float("-inf")).softmax(-1)
    change = (knocked - clean) @ v.to(dtype)  # (heads, rows, d)
    if heads is not None:
        keep = torch.zeros(change.shape[0], dtype=torch.bool, device=change.device)
        keep[list(heads)] = True
        change = change * keep[:, None, None]
    return rows, change.transpose(0, 1)


def layer_effects(
    fwd: ScreenForward, grads: list[list[torch.Tensor]], blocked: torch.Tensor, heads=None, layers=None
) -> torch.Tensor:
    """(tokens, layers): each layer's first-order effect of cutting ``blocked`` on each metric's log-probability."""
    layers = range(len(fwd.queries)) if layers is None else layers
    rows = torch.nonzero(blocked.any(-1)).flatten()
    out = torch.zeros(len(grads), len(fwd.queries), dtype=torch.float64)
    for layer in layers:
        rows, change = local_change(fwd, layer, blocked, heads, rows)
        for n, per_layer in enumerate(grads):
            out[n, layer] = float((per_layer[layer][rows].to(change.dtype) * change).sum())
    return out


def screen_cells(
    fwd: ScreenForward, grads, patterns: list[tuple[torch.Tensor, tuple | None]], layer_sets
) -> torch.Tensor:
    """(patterns, layer sets, tokens): the estimated metric change of each cell (sum over its layers).

    Per layer, shared by every pattern: the scores and clean probabilities of all rows any pattern cuts, and the
    gradient mapped onto the keys, ``G = grad @ v^T`` (so that ``grad . (dP @ v) = sum(dP * G)``); per pattern only its
    rows' renormalised softmax. Equal to summing `local_change` dotted with the gradient (see the tests)."""
    needed = sorted({i for layers in layer_sets for i in layers})
    rows_of = [torch.nonzero(blocked.any(-1)).flatten() for blocked, _ in patterns]
    union = torch.unique(torch.cat(rows_of)) if rows_of else torch.zeros(0, dtype=torch.long)
    index_of = [torch.searchsorted(union, rows) for rows in rows_of]
    effects = torch.zeros(len(patterns), len(grads), len(fwd.queries), dtype=torch.float64)
    for layer in needed:
        if not len(union):
            break
        q, k, v = fwd.queries[layer], fwd.keys[layer], fwd.values[layer]
        dtype = torch.promote_types(q.dtype, torch.float32)
        seq_len = k.shape[1]
        causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=q.device).tril()[union.to(q.device)]
        scores = ((q[:, union].to(dtype) @ k.to(dtype).transpose(-1, -2)) * fwd.scales[layer]).masked_fill_(
            ~causal, float("-inf")
        )
        clean = scores.softmax(-1)
        mapped = [g[layer][union].to(dtype).transpose(0, 1) @ v.to(dtype).transpose(-1, -2) for g in grads]
        for p, (blocked, heads) in enumerate(patterns):
            index = index_of[p].to(q.device)
            whole = len(index) == len(union)  # e.g. cross_frame: every cut row; no gather needed
            head_index = slice(None) if heads is None else torch.tensor(list(heads), device=q.device)
            part = scores[head_index] if whole else scores[head_index][:, index]
            cut = blocked.to(q.device)[rows_of[p].to(q.device)]
            diff = part.masked_fill(cut, float("-inf")).softmax(-1)
            diff.sub_(clean[head_index] if whole else clean[head_index][:, index])
            for n, g in enumerate(mapped):
                g = g[head_index] if whole else g[head_index][:, index]
                effects[p, n, layer] = float(diff.reshape(-1) @ g.reshape(-1))  # fused multiply-sum
    out = torch.zeros(len(patterns), len(layer_sets), len(grads), dtype=torch.float64)
    for s, layers in enumerate(layer_sets):
        out[:, s] = effects[:, :, list(layers)].sum(-1)
    return out

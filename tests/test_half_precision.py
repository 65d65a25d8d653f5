"""Half precision: the fast engine and the naive recompute differ by rounding, not by semantics (the tolerance of
`mapflow.knockout.precision`), and a knockout stays exact: a blocked edge gets exactly zero attention weight in every
attention path (the model's eager and sdpa masks, the engine's prefix/suffix kernels)."""

import copy

import pytest
import torch

from mapflow.knockout import precision
from mapflow.knockout.engine import KnockoutConfig, run_knockouts
from mapflow.knockout.flows import PAPER_FLOWS, Flow, Window
from mapflow.knockout.masks import apply_layer_masks

FLOWS = [f for flows in PAPER_FLOWS.values() for f in flows]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])  # a GPU session runs both
HALF = [pytest.param("bfloat16"), pytest.param("float16", marks=pytest.mark.slow)]


def prepare(adapter, sample, frames):
    from mapflow.inputs.prompts import mcqa_segments

    return adapter.prepare(
        frames, mcqa_segments(sample), option_letters=sample.option_letters, true_letter=sample.answer_letter
    )


def sweep(layout, num_layers, shift=0):
    """Every (flow, layer) cell; ``shift`` moves each window by that many layers (a deliberately wrong sweep)."""
    return [
        KnockoutConfig(
            torch.from_numpy(Flow.parse(f).block_matrix(layout)),
            tuple((i + shift) % num_layers for i in Window("center", 3).layers(layer, num_layers)),
        )
        for f in FLOWS
        for layer in range(num_layers)
    ]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALF)
def test_fast_engine_differs_from_naive_by_rounding_only(tiny_model_dir, sample, frames, dtype, device):
    from mapflow.models import load_adapter

    sdpa = load_adapter(tiny_model_dir, attn_implementation="sdpa", dtype=dtype, device=device)
    eager = load_adapter(tiny_model_dir, attn_implementation="eager", dtype=dtype, device=device)
    # float64 of the same rounded weights: what the half-precision runs approximate
    exact = type(sdpa)(copy.deepcopy(sdpa.hf_model).double(), sdpa.processor)
    inputs = {name: prepare(a, sample, frames) for name, a in (("sdpa", sdpa), ("eager", eager), ("exact", exact))}
    configs = sweep(inputs["sdpa"].layout, sdpa.num_layers)
    naive = run_knockouts(sdpa, inputs["sdpa"], configs, plan="naive")
    naive_eager = run_knockouts(eager, inputs["eager"], configs, plan="naive")
    fast = run_knockouts(sdpa, inputs["sdpa"], configs, plan="auto")
    reference = precision.probabilities(run_knockouts(exact, inputs["exact"], configs, plan="naive"))
    p_naive, p_fast = precision.probabilities(naive), precision.probabilities(fast)

    tau = precision.rounding_spread(naive, naive_eager)
    assert tau > 0  # the two kernels do round differently: the spread is a measurement, not a zero
    assert precision.max_abs_diff(p_fast, p_naive) <= precision.SPREAD_FACTOR * tau
    naive_error = max(
        precision.max_abs_diff(p_naive, reference),
        precision.max_abs_diff(precision.probabilities(naive_eager), reference),
    )
    assert precision.max_abs_diff(p_fast, reference) <= precision.REFERENCE_FACTOR * naive_error
    # the bound can fail: a semantic error (every window one layer off) lands far outside it
    wrong = run_knockouts(sdpa, inputs["sdpa"], sweep(inputs["sdpa"].layout, sdpa.num_layers, shift=1))
    assert precision.max_abs_diff(precision.probabilities(wrong), p_naive) > precision.SPREAD_FACTOR * tau


def eager_weights(adapter, prepared, blocked, layer):
    """Attention weights (heads, L, L) of ``layer`` under a knockout of ``blocked`` there (eager returns them)."""
    with torch.no_grad(), adapter.trace(prepared):
        apply_layer_masks(adapter.layers, {layer: blocked})
        weights = adapter.attention(layer).output[1].save()
    return weights[0]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_blocked_edges_get_exactly_zero_weight_in_the_models_half_precision_mask(tiny_model_dir, sample, frames, dtype):
    from mapflow.models import load_adapter

    adapter = load_adapter(tiny_model_dir, attn_implementation="eager", dtype=dtype)
    prepared = prepare(adapter, sample, frames)
    layout = prepared.layout
    blocked = torch.from_numpy(
        Flow.parse("cross_frame").block_matrix(layout) | Flow.parse("video->last").block_matrix(layout)
    )
    causal = torch.ones(layout.seq_len, layout.seq_len, dtype=torch.bool).tril()
    weights = eager_weights(adapter, prepared, blocked, layer=1)
    assert weights.dtype == getattr(torch, dtype) and blocked.any()
    assert (weights[:, blocked] == 0).all()  # exactly: finfo.min plus any score underflows to a zero weight
    assert (weights[:, causal & ~blocked] > 0).all()  # and nothing allowed underflowed with it
    sums = weights.float().sum(-1)
    assert (sums - 1).abs().max() <= layout.seq_len * torch.finfo(weights.dtype).eps
    # the additive mask really is the dtype's finfo.min at blocked edges (not -inf: no NaN on a fully cut row)
    from mapflow.knockout.masks import knockout_attention_mask

    additive = torch.zeros(1, 1, layout.seq_len, layout.seq_len, dtype=weights.dtype)
    mask = knockout_attention_mask(additive, blocked)
    assert (mask[0, 0][blocked] == torch.finfo(weights.dtype).min).all() and not mask.isnan().any()


SUFFIX_PATHS = {
    "few-query softmax": {"DENSE_MAX_SCORES": 10**9},
    "block-sparse pieces (CPU flash kernel)": {"DENSE_MAX_SCORES": 0, "QUERY_CHUNK": 8, "KEY_GAP": 4},
    "explicit-softmax pieces (other devices)": {
        "DENSE_MAX_SCORES": 0,
        "QUERY_CHUNK": 8,
        "KEY_GAP": 4,
        "_attend_part": "math",
    },
}


@pytest.mark.parametrize("path", SUFFIX_PATHS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_blocked_edges_get_exactly_zero_weight_in_the_engines_kernels(path, dtype, monkeypatch):
    """Values are one-hot per key, so each attention output row is the query's weights over all keys."""
    from mapflow.knockout import suffix_attention
    from mapflow.knockout.suffix_attention import SuffixBatch, attend_batch

    for name, value in SUFFIX_PATHS[path].items():
        monkeypatch.setattr(suffix_attention, name, suffix_attention._attend_part_math if value == "math" else value)
    length, start, heads = 48, 12, 2
    generator = torch.Generator().manual_seed(0)
    blocked = torch.rand(length, length, generator=generator) < 0.4
    blocked.fill_diagonal_(False)  # every query keeps a key
    blocked[:, 20:30] = True  # and a long blocked run (a piece boundary)
    blocked.diagonal()[:] = False
    keys = torch.randn(1, 1, length, length, generator=generator).to(dtype)
    values = torch.eye(length, dtype=dtype)[None, None]
    queries = torch.randn(1, heads, length - start, length, generator=generator).to(dtype)
    batch = SuffixBatch.build(start, [keys], [values], [blocked], [(0,)], [0], dtype, torch.device("cpu"))
    allowed = (torch.ones(length, length, dtype=torch.bool).tril() & ~blocked)[start:]
    for last_only in (False, True):
        weights = attend_batch(batch, 0, queries, keys[:, :, start:], values[:, :, start:], length**-0.5, last_only)[0]
        expected = allowed[-1:] if last_only else allowed
        assert weights.dtype == dtype
        assert (weights[:, ~expected] == 0).all(), (path, last_only)
        assert (weights[:, expected] > 0).all(), (path, last_only)
        assert (weights.float().sum(-1) - 1).abs().max() <= length * torch.finfo(dtype).eps

"""Every fast path of the engine (batched rows, cached prefix, skipped layers, rows joining mid-forward, the
few-query and block-sparse attention, all combined) equals the naive full recompute from raw inputs."""

import pytest
import torch
from tolerances import assert_float32_exact

from mapflow.knockout.engine import (
    KnockoutConfig,
    clean_state,
    plan_batches,
    plan_packs,
    run_batch,
    run_knockouts,
    run_pack,
)
from mapflow.knockout.flows import PAPER_FLOWS, Flow, Window

ALL_FLOWS = [f for flows in PAPER_FLOWS.values() for f in flows] + ["system->bridge", "video->question+last->last"]


def configs_for(layout, flows, window, num_layers):
    return [
        KnockoutConfig(torch.from_numpy(Flow.parse(f).block_matrix(layout)), window.layers(layer, num_layers))
        for f in flows
        for layer in range(num_layers)
    ]


def probs(logits):
    return logits.softmax(-1)


@pytest.mark.parametrize("max_rows", [None, 3])
def test_auto_plan_equals_naive_for_every_flow_and_layer(adapter, prepared, adapter64, prepared64, max_rows):
    configs = configs_for(prepared.layout, ALL_FLOWS, Window("center", 3), adapter.num_layers)
    naive = run_knockouts(adapter, prepared, configs, plan="naive")
    fast = run_knockouts(adapter, prepared, configs, plan="auto", max_rows=max_rows)
    exact = run_knockouts(adapter64, prepared64, configs, plan="naive")
    assert_float32_exact(fast, naive, exact, "logits")
    assert_float32_exact(probs(fast), probs(naive), probs(exact), "probabilities")
    assert not torch.equal(probs(naive)[0], probs(naive)[-1])  # the configurations really differ


ATTENTION_PATHS = {
    "few-query softmax": {"DENSE_MAX_SCORES": 10**9},
    "block-sparse pieces": {"DENSE_MAX_SCORES": 0, "QUERY_CHUNK": 8, "KEY_GAP": 4},
    "explicit-softmax pieces (non-CPU kernel)": {
        "DENSE_MAX_SCORES": 0,
        "QUERY_CHUNK": 8,
        "MATH_QUERY_CHUNK": 5,
        "_attend_part": "math",
    },
}


@pytest.mark.parametrize("path", ATTENTION_PATHS)
def test_each_path_alone_equals_naive(sdpa_adapter, adapter64, prepared64, sample, frames, path, monkeypatch):
    from mapflow.inputs.prompts import mcqa_segments
    from mapflow.knockout import suffix_attention

    for name, value in ATTENTION_PATHS[path].items():
        monkeypatch.setattr(suffix_attention, name, suffix_attention._attend_part_math if value == "math" else value)
    adapter = sdpa_adapter
    prepared = adapter.prepare(
        frames, mcqa_segments(sample), option_letters=sample.option_letters, true_letter=sample.answer_letter
    )
    layout = prepared.layout
    clean = clean_state(adapter, prepared)
    last = torch.from_numpy(Flow.parse("video->last").block_matrix(layout))
    early = torch.from_numpy(Flow.parse("system->bridge").block_matrix(layout))
    cross = torch.from_numpy(Flow.parse("cross_frame").block_matrix(layout))
    self_cut = torch.from_numpy(Flow.parse("last->last").block_matrix(layout))
    cases = {
        "batched, no prefix, no skip": [KnockoutConfig(early, (0, 1)), KnockoutConfig(early, (0,))],
        "suffix only": [KnockoutConfig(last, (0, 1, 2, 3))],
        "layer skip only": [KnockoutConfig(early, (2, 3))],
        "suffix + skip + batch": [KnockoutConfig(last, (2,)), KnockoutConfig(last, (3,)), KnockoutConfig(last, (2, 3))],
        "rows joining at layers 1 and 3, mixed flows and suffix starts": [
            KnockoutConfig(early, (3,)),
            KnockoutConfig(last, (1, 2)),
            KnockoutConfig(early, (0, 1)),
            KnockoutConfig(cross, (1, 2, 3)),
            KnockoutConfig(cross, (0,)),
        ],
        "a query whose prefix keys are all cut, and one that may not read itself": [
            KnockoutConfig(early, (0, 1, 2, 3)),
            KnockoutConfig(self_cut, (1, 2)),
        ],
    }
    cases["packed: every suffix start in one forward"] = [c for group in list(cases.values()) for c in group]
    for name, configs in cases.items():
        naive = run_knockouts(adapter, prepared, configs, plan="naive")
        exact = run_knockouts(adapter64, prepared64, configs, plan="naive")
        for run in (run_batch, run_pack):  # one suffix start per batch row / rows packed along the sequence
            fast = run(adapter, clean, configs)
            assert_float32_exact(fast, naive, exact, f"{name}, {run.__name__}: logits")
            assert_float32_exact(probs(fast), probs(naive), probs(exact), f"{name}, {run.__name__}: probabilities")
    assert KnockoutConfig(last, (0,)).first_row == layout.seq_len - 1
    assert KnockoutConfig(early, (0,)).first_row == layout.positions("bridge")[0]


def test_empty_configuration_reproduces_the_clean_logits(sdpa_adapter, prepared):
    n = prepared.layout.seq_len
    clean = clean_state(sdpa_adapter, prepared)
    logits = run_knockouts(
        sdpa_adapter, prepared, [KnockoutConfig(torch.zeros(n, n, dtype=torch.bool), ())], clean=clean
    )
    assert torch.equal(logits[0], clean.logits[-1])  # nothing to cut: the clean logits themselves, no forward


def test_planner_covers_every_configuration_and_respects_the_row_limit(sdpa_adapter, prepared, monkeypatch):
    import mapflow.knockout.planner as engine

    configs = configs_for(
        prepared.layout, ["video->last", "cross_frame", "question->last"], Window("center", 3), sdpa_adapter.num_layers
    )
    seq_len = prepared.layout.seq_len
    batches = plan_batches(configs, sdpa_adapter, seq_len, max_rows=3)
    assert sorted(i for b in batches for i in b) == list(range(len(configs)))
    assert all(len(batch) <= 3 for batch in batches)
    # groups merge when recomputing their extra positions is cheaper than one more forward
    monkeypatch.setattr(engine, "FORWARD_OVERHEAD_TOKENS", 10**9)
    assert len(plan_batches(configs, sdpa_adapter, seq_len)) == 1
    monkeypatch.setattr(engine, "FORWARD_OVERHEAD_TOKENS", 0)
    separate = plan_batches(configs, sdpa_adapter, seq_len)
    assert all(len({configs[i].first_row for i in batch}) == 1 for batch in separate) and len(separate) == 2


def test_pack_planner_covers_every_configuration_within_its_limits(sdpa_adapter, prepared, monkeypatch):
    import mapflow.knockout.planner as engine

    configs = configs_for(
        prepared.layout, ["video->last", "cross_frame", "question->last"], Window("center", 3), sdpa_adapter.num_layers
    )
    seq_len = prepared.layout.seq_len
    assert len(plan_packs(configs, sdpa_adapter, seq_len)) == 1  # tiny: everything fits one forward
    packs = plan_packs(configs, sdpa_adapter, seq_len, max_rows=5)
    assert sorted(i for p in packs for i in p) == list(range(len(configs))) and max(map(len, packs)) == 5
    monkeypatch.setattr(engine, "PACK_TOKEN_LIMIT", seq_len)
    packs = plan_packs(configs, sdpa_adapter, seq_len)
    assert sorted(i for p in packs for i in p) == list(range(len(configs)))
    assert all(sum(seq_len - configs[i].first_row for i in p) <= seq_len for p in packs)


def test_rows_start_together_when_the_adapter_cannot_broadcast_suffix_arguments(
    sdpa_adapter, sample, frames, adapter64, prepared64, monkeypatch
):
    """Qwen3-VL's per-row deepstack features: every row runs from the batch's first layer; still exact."""
    from conftest import prepare_mcqa

    prepared = prepare_mcqa(sdpa_adapter, sample, frames)
    monkeypatch.setattr(type(sdpa_adapter), "suffix_kwargs_broadcast", False)
    configs = configs_for(prepared.layout, ["cross_frame", "video->last"], Window("center", 1), sdpa_adapter.num_layers)
    naive = run_knockouts(sdpa_adapter, prepared, configs, plan="naive")
    fast = run_knockouts(sdpa_adapter, prepared, configs, plan="auto")
    assert_float32_exact(fast, naive, run_knockouts(adapter64, prepared64, configs, plan="naive"))


@pytest.mark.parametrize("math", [False, True])
def test_piecewise_attention_equals_one_masked_softmax(math, monkeypatch):
    """Prefix and suffix pieces merged by log-sum-exp equal one softmax over all keys under causal & ~blocked,
    including queries with no allowed key in a whole piece."""
    from mapflow.knockout import suffix_attention as sa

    monkeypatch.setattr(sa, "QUERY_CHUNK", 4)
    monkeypatch.setattr(sa, "KEY_GAP", 3)
    if math:
        monkeypatch.setattr(sa, "_attend_part", sa._attend_part_math)
    gen = torch.Generator().manual_seed(0)
    length, start, heads, kv_heads, dim, rows = 23, 9, 4, 2, 8, 3
    blocked = torch.rand(length, length, generator=gen) < 0.4
    blocked[:, 0] = False  # every query keeps a key
    blocked[12:15, :start] = True  # their whole prefix is cut
    blocked[16, 16] = True  # may not read itself
    q = torch.randn(rows, heads, length - start, dim, generator=gen)
    k, v = (torch.randn(rows, kv_heads, length - start, dim, generator=gen) for _ in range(2))
    prefix_k, prefix_v = (torch.randn(1, kv_heads, start, dim, generator=gen) for _ in range(2))
    out = sa._attend(q, k, v, prefix_k, prefix_v, sa.cut_pieces(blocked[start:], start, torch.float32, "cpu"), 0.3)

    keys = torch.cat([prefix_k.expand(rows, -1, -1, -1), k], 2).repeat_interleave(2, 1)
    values = torch.cat([prefix_v.expand(rows, -1, -1, -1), v], 2).repeat_interleave(2, 1)

    def masked_softmax_attention(allowed, dtype):
        scores = (q.to(dtype) @ keys.to(dtype).transpose(-1, -2) * 0.3).masked_fill(~allowed[start:], float("-inf"))
        return scores.softmax(-1) @ values.to(dtype)

    allowed = torch.ones(length, length, dtype=torch.bool).tril() & ~blocked
    assert_float32_exact(
        out,
        masked_softmax_attention(allowed, torch.float32),
        masked_softmax_attention(allowed, torch.float64),
        "knocked out",
    )
    clean = sa._attend(q, k, v, prefix_k, prefix_v, sa.clean_pieces(length - start, start), 0.3)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    assert_float32_exact(
        clean, masked_softmax_attention(causal, torch.float32), masked_softmax_attention(causal, torch.float64), "clean"
    )


def test_rows_share_the_clean_prefix_without_copies(sdpa_adapter, prepared):
    from mapflow.knockout.suffix_attention import SuffixBatch

    clean = clean_state(sdpa_adapter, prepared)
    last = torch.from_numpy(Flow.parse("video->last").block_matrix(prepared.layout))
    start = prepared.layout.seq_len - 1
    batch = SuffixBatch.build(
        start,
        clean.keys,
        clean.values,
        [last] * 5,
        [(0,), (1,), (2,), (3,), (0, 1)],
        [0, 0, 0, 1, 2],
        torch.float32,
        "cpu",
    )
    assert all(p.data_ptr() == c.data_ptr() and p.shape[0] == 1 for p, c in zip(batch.prefix_keys, clean.keys))
    assert [len(i) for i in batch.dense_index] == [3, 4, 5, 5]  # rows join at their first knocked-out layer
    assert batch.dense_bias.shape[0] == 2  # one bias per distinct pattern plus the uncut one, not per row


def test_suffix_attention_leaves_no_registration_or_config_change_behind(sdpa_adapter):
    """The fast engine runs on shared servers: its attention exists only inside its block (nested blocks too)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    from mapflow.knockout.suffix_attention import ATTENTION_NAME, suffix_attention

    config = sdpa_adapter.text_config
    before = config._attn_implementation
    registries = (AttentionInterface._global_mapping, type(ALL_MASK_ATTENTION_FUNCTIONS)._global_mapping)
    assert all(ATTENTION_NAME not in r for r in registries)
    with suffix_attention(config):
        with suffix_attention(config):
            assert config._attn_implementation == ATTENTION_NAME
        assert all(ATTENTION_NAME in r for r in registries) and config._attn_implementation == ATTENTION_NAME
    assert all(ATTENTION_NAME not in r for r in registries) and config._attn_implementation == before

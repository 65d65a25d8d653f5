"""Every fast path of the engine (batched rows, cached prefix, skipped layers, all combined) equals the naive full
recompute from raw inputs."""

import pytest
import torch

from mapflow.engine import KnockoutConfig, clean_state, plan_batches, run_batch, run_knockouts
from mapflow.flows import PAPER_FLOWS, Flow, Window

ALL_FLOWS = [f for flows in PAPER_FLOWS.values() for f in flows] + ["system->bridge", "video->question+last->last"]


def configs_for(layout, flows, window, num_layers):
    return [KnockoutConfig(torch.from_numpy(Flow.parse(f).block_matrix(layout)), window.layers(layer, num_layers))
            for f in flows for layer in range(num_layers)]


def probs(logits):
    return logits.softmax(-1)


@pytest.mark.parametrize("max_rows", [None, 3])
def test_auto_plan_equals_naive_for_every_flow_and_layer(adapter, prepared, max_rows):
    configs = configs_for(prepared.layout, ALL_FLOWS, Window("center", 3), adapter.num_layers)
    naive = run_knockouts(adapter, prepared, configs, plan="naive")
    fast = run_knockouts(adapter, prepared, configs, plan="auto", max_rows=max_rows)
    assert (probs(naive) - probs(fast)).abs().max() <= 1e-5
    assert not torch.equal(probs(naive)[0], probs(naive)[-1])  # the configurations really differ


def test_each_path_alone_equals_naive(sdpa_adapter, sample, frames):
    from mapflow.prompts import mcqa_segments

    adapter = sdpa_adapter
    prepared = adapter.prepare(frames, mcqa_segments(sample), option_letters=sample.option_letters,
                               true_letter=sample.answer_letter)
    layout = prepared.layout
    clean = clean_state(adapter, prepared)
    last = torch.from_numpy(Flow.parse("video->last").block_matrix(layout))
    early = torch.from_numpy(Flow.parse("system->bridge").block_matrix(layout))
    cases = {
        "batched, no prefix, no skip": [KnockoutConfig(early, (0, 1)), KnockoutConfig(early, (0,))],
        "suffix only": [KnockoutConfig(last, (0, 1, 2, 3))],
        "layer skip only": [KnockoutConfig(early, (2, 3))],
        "suffix + skip + batch": [KnockoutConfig(last, (2,)), KnockoutConfig(last, (3,)), KnockoutConfig(last, (2, 3))],
    }
    for name, configs in cases.items():
        fast = run_batch(adapter, clean, configs)
        naive = run_knockouts(adapter, prepared, configs, plan="naive")
        assert (probs(fast) - probs(naive)).abs().max() <= 1e-5, name
    assert KnockoutConfig(last, (0,)).first_row == layout.seq_len - 1
    assert KnockoutConfig(early, (0,)).first_row == layout.positions("bridge")[0]


def test_empty_configuration_reproduces_the_clean_logits(sdpa_adapter, prepared):
    n = prepared.layout.seq_len
    clean = clean_state(sdpa_adapter, prepared)
    logits = run_knockouts(sdpa_adapter, prepared, [KnockoutConfig(torch.zeros(n, n, dtype=torch.bool), ())],
                           clean=clean)
    assert (logits[0] - clean.logits[-1]).abs().max() <= 1e-5


def test_planner_covers_every_configuration_and_respects_the_row_limit(sdpa_adapter, prepared, monkeypatch):
    import mapflow.engine as engine

    configs = configs_for(prepared.layout, ["video->last", "cross_frame", "question->last"], Window("center", 3),
                          sdpa_adapter.num_layers)
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

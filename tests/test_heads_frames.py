"""Head-level and frame-pair knockout: the fast engine equals the plain full recompute (naive, one full forward with
a per-head mask) under sdpa and eager; bad heads and frames are refused with the valid range."""

import numpy as np
import pytest
import torch

from mapflow.errors import KnockoutConfigError
from mapflow.knockout.engine import KnockoutConfig, clean_state, run_batch, run_knockouts, run_pack
from mapflow.knockout.flows import Flow


def blocked(layout, flow):
    return torch.from_numpy(Flow.parse(flow).block_matrix(layout))


def head_configs(layout, num_heads):
    last, cross, question = (blocked(layout, f) for f in ("video->last", "cross_frame", "video->question"))
    return [
        KnockoutConfig(last, (1, 2), (0,)),
        KnockoutConfig(last, (1, 2), (1, num_heads - 1)),
        KnockoutConfig(cross, (0, 1), (0,)),
        KnockoutConfig(cross, (0, 1)),
        KnockoutConfig(question, (2, 3), (num_heads - 1,)),
        KnockoutConfig(cross, (3,), (1,)),
        KnockoutConfig(last, (1, 2)),
    ]


def test_head_knockout_fast_equals_naive(adapter, prepared):
    configs = head_configs(prepared.layout, adapter.num_heads)
    naive = run_knockouts(adapter, prepared, configs, plan="naive")
    clean = clean_state(adapter, prepared)
    for run in (run_batch, run_pack):
        fast = run(adapter, clean, configs)
        assert (fast.softmax(-1) - naive.softmax(-1)).abs().max() <= 1e-5, run.__name__
    # the head restriction is real: one head differs from all heads and from clean
    p = naive.softmax(-1)
    assert (p[0] - p[-1]).abs().max() > 1e-4 and (p[0] - clean.logits[-1].softmax(-1)).abs().max() > 1e-6


def test_every_head_equals_the_unrestricted_knockout(adapter, prepared):
    """Cutting the flow in all heads through the per-head mask is the ordinary knockout (checks the head axis)."""
    cross = blocked(prepared.layout, "cross_frame")
    heads = tuple(range(adapter.num_heads))
    configs = [KnockoutConfig(cross, (0, 1), heads), KnockoutConfig(cross, (0, 1))]
    naive = run_knockouts(adapter, prepared, configs, plan="naive")
    assert (naive[0] - naive[1]).abs().max() <= 1e-5


def test_heads_out_of_range_are_refused(sdpa_adapter, prepared):
    cross = blocked(prepared.layout, "cross_frame")
    with pytest.raises(KnockoutConfigError, match=r"--heads.*0\.\.3"):
        run_knockouts(sdpa_adapter, prepared, [KnockoutConfig(cross, (0,), (4,))])


def test_frame_pairs_and_distances_fast_equal_naive(adapter, prepared):
    layout = prepared.layout
    flows = ["frame_0->frame_1", "frame_1->frame_3", "frame_distance:1", "frame_distance:2", "frame_0->frame_3"]
    configs = [KnockoutConfig(blocked(layout, f), layers) for f in flows for layers in ((0, 1), (2,), (1, 2, 3))]
    naive = run_knockouts(adapter, prepared, configs, plan="naive")
    fast = run_knockouts(adapter, prepared, configs)
    assert (fast.softmax(-1) - naive.softmax(-1)).abs().max() <= 1e-5


def test_frame_pair_blocks_exactly_one_pair(prepared):
    layout = prepared.layout
    pair = blocked(layout, "frame_1->frame_3").numpy()
    rows, cols = np.nonzero(pair)
    assert set(rows) == set(layout.frames[3].positions()) and set(cols) == set(layout.frames[1].positions())
    # the distances partition cross_frame
    distances = sum(blocked(layout, f"frame_distance:{d}").numpy().astype(int) for d in range(1, len(layout.frames)))
    assert np.array_equal(distances, blocked(layout, "cross_frame").numpy().astype(int))


def test_frames_out_of_range_are_refused(prepared):
    n = len(prepared.layout.frames)
    with pytest.raises(KnockoutConfigError, match=rf"frame {n} .*0\.\.{n - 1}"):
        Flow.parse(f"frame_{n}->frame_0").block_matrix(prepared.layout)
    with pytest.raises(KnockoutConfigError, match=rf"distances 1\.\.{n - 1}"):
        Flow.parse(f"frame_distance:{n}").block_matrix(prepared.layout)


@pytest.mark.parametrize("path", ["few-query softmax", "block-sparse pieces", "explicit-softmax pieces"])
def test_head_knockout_on_each_attention_path(sdpa_adapter, prepared, path, monkeypatch):
    from mapflow.knockout import suffix_attention as sa

    settings = {
        "few-query softmax": {"DENSE_MAX_SCORES": 10**9},
        "block-sparse pieces": {"DENSE_MAX_SCORES": 0, "QUERY_CHUNK": 8, "KEY_GAP": 4},
        "explicit-softmax pieces": {"DENSE_MAX_SCORES": 0, "QUERY_CHUNK": 8, "_attend_part": sa._attend_part_math},
    }
    for name, value in settings[path].items():
        monkeypatch.setattr(sa, name, value)
    configs = head_configs(prepared.layout, sdpa_adapter.num_heads)
    naive = run_knockouts(sdpa_adapter, prepared, configs, plan="naive")
    clean = clean_state(sdpa_adapter, prepared)
    for run in (run_batch, run_pack):
        assert (run(sdpa_adapter, clean, configs).softmax(-1) - naive.softmax(-1)).abs().max() <= 1e-5

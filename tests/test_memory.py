"""The memory planner: pack sizes follow free device memory (or a budget), and a forward that runs out of memory is
split and retried with the same numbers coming back, in the engine's output and in a study's store."""

import numpy as np
import pytest
import torch
import xarray as xr

from mapflow.knockout import planner
from mapflow.knockout.engine import KnockoutConfig, clean_state, run_knockouts
from mapflow.knockout.flows import PAPER_FLOWS, Flow, Window

FLOWS = [f for flows in PAPER_FLOWS.values() for f in flows]


def sweep(layout, num_layers):
    return [
        KnockoutConfig(torch.from_numpy(Flow.parse(f).block_matrix(layout)), Window("center", 3).layers(i, num_layers))
        for f in FLOWS
        for i in range(num_layers)
    ]


@pytest.fixture
def prepared(sdpa_adapter, sample, frames):
    from mapflow.inputs.prompts import mcqa_segments

    return sdpa_adapter.prepare(
        frames, mcqa_segments(sample), option_letters=sample.option_letters, true_letter=sample.answer_letter
    )


@pytest.fixture
def fresh_limits(monkeypatch):
    """Each test learns its own token limit (the session's adapter is shared)."""
    monkeypatch.setattr(planner, "_LEARNED_TOKEN_LIMIT", {})


def fail_forwards_above(adapter, max_tokens, monkeypatch):
    """An allocator that cannot hold more than ``max_tokens`` positions of a knockout forward's MLP activations:
    every decoder layer's MLP raises `torch.OutOfMemoryError` beyond that, as CUDA's caching allocator does (the
    clean run, which no split can shrink, is spared). Returns the sizes that failed."""
    from mapflow.knockout.suffix_attention import ATTENTION_NAME

    failed = []
    for i in range(adapter.num_layers):
        mlp = adapter.layers[i]._module.mlp
        forward = mlp.forward

        def limited(hidden, forward=forward):
            tokens = hidden.shape[:-1].numel()
            if tokens > max_tokens and adapter.attn_implementation == ATTENTION_NAME:
                failed.append(tokens)
                raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {tokens} positions (fake)")
            return forward(hidden)

        monkeypatch.setattr(mlp, "forward", limited)
    return failed


def test_a_pack_that_runs_out_of_memory_is_split_and_gives_the_same_numbers(
    sdpa_adapter, prepared, monkeypatch, fresh_limits
):
    configs = sweep(prepared.layout, sdpa_adapter.num_layers)
    clean = clean_state(sdpa_adapter, prepared)
    expected = run_knockouts(sdpa_adapter, prepared, configs, clean=clean)
    seq_len = prepared.layout.seq_len
    # a fake device reporting 80 GB free: the planner packs the whole sweep into one forward, which then fails
    monkeypatch.setattr(planner, "model_devices", lambda adapter: {torch.device("cuda", 0)})
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (80 * 2**30, 80 * 2**30))
    assert len(planner.plan_packs(configs, sdpa_adapter, seq_len)) == 1
    failed = fail_forwards_above(sdpa_adapter, 2 * seq_len, monkeypatch)
    got = run_knockouts(sdpa_adapter, prepared, configs, clean=clean)
    assert failed and max(failed) > 2 * seq_len  # it really ran out, and more than once split
    assert (got.softmax(-1) - expected.softmax(-1)).abs().max() <= 1e-5
    assert (got - expected).abs().max() <= 1e-4
    # the planner learned: the next sweep plans packs below the failed size and needs no retry
    assert planner.pack_token_limit(sdpa_adapter) < planner.PACK_TOKEN_LIMIT
    failed.clear()
    again = run_knockouts(sdpa_adapter, prepared, configs, clean=clean)
    assert not failed and (again.softmax(-1) - expected.softmax(-1)).abs().max() <= 1e-5


def test_a_single_row_that_does_not_fit_says_so(sdpa_adapter, prepared, monkeypatch, fresh_limits):
    config = sweep(prepared.layout, sdpa_adapter.num_layers)[0]
    clean = clean_state(sdpa_adapter, prepared)
    fail_forwards_above(sdpa_adapter, 1, monkeypatch)
    with pytest.raises(torch.OutOfMemoryError, match="one knockout row .* does not fit .*--device-map auto"):
        run_knockouts(sdpa_adapter, prepared, [config], clean=clean)


def test_pack_sizes_follow_free_memory_and_the_budget(sdpa_adapter, prepared, monkeypatch, fresh_limits):
    configs = sweep(prepared.layout, sdpa_adapter.num_layers)
    seq_len = prepared.layout.seq_len
    monkeypatch.setattr(planner, "model_devices", lambda adapter: {torch.device("cuda", 0)})
    free = {"bytes": 80 * 2**30}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 80 * 2**30))
    assert planner.free_memory_bytes(sdpa_adapter) == 80 * 2**30
    assert len(planner.plan_packs(configs, sdpa_adapter, seq_len)) == 1
    free["bytes"] = 4 * planner._row_bytes(sdpa_adapter, seq_len)(seq_len) * 3  # three full rows per quarter
    packs = planner.plan_packs(configs, sdpa_adapter, seq_len)
    assert len(packs) > 1 and sorted(i for p in packs for i in p) == list(range(len(configs)))
    row_bytes = planner._row_bytes(sdpa_adapter, seq_len)
    assert all(sum(row_bytes(seq_len - configs[i].first_row) for i in p) <= free["bytes"] // 4 for p in packs)
    # a budget lowers what the device reports, never raises it
    monkeypatch.setenv(planner.MEMORY_BUDGET_ENV, "1MiB")
    assert planner.free_memory_bytes(sdpa_adapter) == 2**20
    monkeypatch.setenv(planner.MEMORY_BUDGET_ENV, "lots")
    with pytest.raises(ValueError, match="lots"):
        planner.free_memory_bytes(sdpa_adapter)
    monkeypatch.setenv(planner.MEMORY_BUDGET_ENV, "100GiB")
    assert planner.free_memory_bytes(sdpa_adapter) == free["bytes"]


def test_memory_sizes_parse():
    assert planner.parse_bytes("8GiB") == 8 * 2**30
    assert planner.parse_bytes("512 MiB") == 512 * 2**20
    assert planner.parse_bytes("2e9") == 2 * 10**9
    assert planner.parse_bytes("1.5gb") == 1_500_000_000
    assert planner.parse_bytes("1TiB") == 2**40
    for bad in ("lots", "-1GiB", "0", "3 parsecs"):
        with pytest.raises(ValueError, match="memory size"):
            planner.parse_bytes(bad)


def test_the_store_is_the_same_when_packs_run_out_of_memory(
    sdpa_adapter, tiny_benchmark, tmp_path, monkeypatch, fresh_limits
):
    from mapflow.analysis.context import StudyConfig
    from mapflow.analysis.runner import load_study, run_study
    from mapflow.data.benchmarks import get_benchmark
    from mapflow.results.store import open_dataset

    samples = get_benchmark("tvbench").loader(tiny_benchmark, tasks=None, limit=1, seed=0)[:2]
    config = StudyConfig(window=Window("center", 3), samples="all", num_frames=4)
    provenance = {"study": "cross_frame", "model": {"name": "tiny"}, "config": {}}

    def run(out):
        run_study(
            load_study("cross_frame"), sdpa_adapter, samples, out, config=config, provenance=provenance, progress=False
        )
        return open_dataset(out).load()

    expected = run(tmp_path / "plain.zarr")
    failed = fail_forwards_above(sdpa_adapter, 150, monkeypatch)
    monkeypatch.setenv(planner.MEMORY_BUDGET_ENV, "64GiB")  # the budget is not what stops the packs here
    got = run(tmp_path / "split.zarr")
    assert failed
    assert set(got.data_vars) == set(expected.data_vars)
    # float32 forwards of other pack compositions: a probability moves by a relative ~1e-7; bound it at 1e-5, and
    # rel_change = 100 (p_knockout / p_base - 1) by the same relative amount of its ratio
    rtol = 1e-5
    ratios = {"rel_change": ("p_knockout", "p_base"), "rel_change_gt": ("p_gt_knockout", "p_gt_base")}
    for name in expected.data_vars:
        a, b = expected[name].values, got[name].values
        if name in ratios:
            knocked, base = xr.broadcast(*(expected[v] for v in ratios[name]))
            assert (np.abs(b - a) <= 100 * 2 * rtol * knocked.values / base.values).all(), name
        elif np.issubdtype(a.dtype, np.floating):
            np.testing.assert_allclose(b, a, rtol=rtol, atol=0, err_msg=name)
        else:
            assert (a == b).all(), name


def test_an_out_of_memory_wrapped_by_the_tracer_is_retried_and_other_errors_are_not(
    sdpa_adapter, prepared, fresh_limits
):
    from mapflow.knockout.engine import run_within_memory

    configs = sweep(prepared.layout, sdpa_adapter.num_layers)[:4]
    clean = clean_state(sdpa_adapter, prepared)
    calls = []

    def wrapped(adapter, clean, rows):  # as a tracer re-raising what happened inside its trace
        calls.append(len(rows))
        if len(rows) > 1:
            try:
                raise torch.OutOfMemoryError("inside the trace")
            except torch.OutOfMemoryError as err:
                raise RuntimeError("the traced forward failed") from err
        return torch.full((1, 3), float(len(calls)))

    assert run_within_memory(wrapped, sdpa_adapter, clean, configs).shape == (4, 3)
    assert calls == [4, 2, 1, 1, 2, 1, 1]

    def broken(adapter, clean, rows):
        raise RuntimeError("a real bug")

    with pytest.raises(RuntimeError, match="a real bug"):
        run_within_memory(broken, sdpa_adapter, clean, configs)

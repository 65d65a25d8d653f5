"""The frame-pair and head-sweep studies against an independent full recompute (torch hooks, no nnsight), the screen
through the studies (`--plan screen`, `screen+verify K`), `mapflow calibrate`, and the errors on bad input."""

import importlib
import json

import numpy as np
import pytest
import torch
from conftest import study_context

from mapflow.analysis.context import StudyConfig
from mapflow.errors import KnockoutConfigError
from mapflow.knockout.flows import Flow, Window
from mapflow.knockout.screen_agreement import cell_metrics, ranks


def study(name):
    return importlib.import_module(f"mapflow.studies.{name}")


def context(adapter, sample, frames, **config):
    return study_context(adapter, sample, frames, **{"samples": "all", "window": Window("center", 3), **config})


def hooked_probs(adapter, prepared, blocked, layers, heads=None):
    """Last-position probabilities of the HF model, each listed layer given a (per-head) mask by a torch pre-hook."""
    n = prepared.layout.seq_len
    allowed = torch.ones(n, n, dtype=torch.bool).tril()[None, None].repeat(1, adapter.num_heads, 1, 1)
    for h in range(adapter.num_heads) if heads is None else heads:
        allowed[0, h] &= ~blocked
    if adapter.attn_implementation == "eager":  # eager adds its mask to the scores
        allowed = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    handles = [
        adapter.hf_model.model.language_model.layers[i].register_forward_pre_hook(
            lambda module, args, kwargs: (args, {**kwargs, "attention_mask": allowed}), with_kwargs=True
        )
        for i in layers
    ]
    try:
        with torch.no_grad():
            return adapter.hf_model(**prepared.inputs).logits[0, -1].float().softmax(-1)
    finally:
        for handle in handles:
            handle.remove()


def test_frame_pairs_equal_the_full_recompute(adapter, sample, frames):
    ctx = context(adapter, sample, frames)
    ds = study("frame_pairs").run(ctx)
    n = len(ctx.layout.frames)
    assert ds["rel_change"].dims == ("source_frame", "target_frame", "layer")
    values = ds["p_knockout"].values
    assert np.isnan(values[np.tril_indices(n)]).all() and np.isfinite(values[np.triu_indices(n, 1)]).all()
    for source, target, layer in ((0, 1, 0), (1, 3, 2), (0, 3, 3)):
        cut = torch.from_numpy(Flow.parse(f"frame_{source}->frame_{target}").block_matrix(ctx.layout))
        probs = hooked_probs(adapter, ctx.prepared, cut, Window("center", 3).layers(layer, adapter.num_layers))
        assert abs(values[source, target, layer] - float(probs[int(ds["pred_base"])])) <= 1e-5
    by_distance = study("frame_pairs").run(context(adapter, sample, frames, options={"by": "distance"}))
    assert by_distance["distance"].values.tolist() == list(range(1, n))
    alone = ctx.sweep(["frame_distance:2"])
    np.testing.assert_allclose(
        by_distance["p_knockout"].sel(distance=2).values, alone["p_knockout"].values[0], atol=1e-6
    )


def test_frame_pairs_need_two_frames(sdpa_adapter, sample, frames):
    with pytest.raises(KnockoutConfigError, match="at least 2 frames.*--frames"):
        study("frame_pairs").run(context(sdpa_adapter, sample, frames[:1]))


def test_head_sweep_equals_the_full_recompute(adapter, sample, frames):
    ctx = context(
        adapter, sample, frames, options={"heads": "0,3", "window": "3"}, flows=("video->last", "question->last")
    )
    ds = study("head_sweep").run(ctx)
    assert ds["head"].values.tolist() == [0, 3] and set(ds["rel_change"].dims) == {"head", "flow", "layer"}
    for flow, head, layer in (("video->last", 0, 1), ("question->last", 3, 2)):
        cut = torch.from_numpy(Flow.parse(flow).block_matrix(ctx.layout))
        probs = hooked_probs(
            adapter, ctx.prepared, cut, Window("center", 3).layers(layer, adapter.num_layers), heads=(head,)
        )
        cell = ds["p_knockout"].sel(flow=flow, head=head, layer=layer)
        assert abs(float(cell) - float(probs[int(ds["pred_base"])])) <= 1e-5


def test_heads_out_of_range_name_the_option(sdpa_adapter, sample, frames):
    with pytest.raises(KnockoutConfigError, match=r"--option heads.*0\.\.3"):
        study("head_sweep").run(context(sdpa_adapter, sample, frames, options={"heads": "1,4"}))
    with pytest.raises(KnockoutConfigError, match=r"--heads.*0\.\.3"):
        study("cross_frame").run(context(sdpa_adapter, sample, frames, heads=(7,)))


def test_screen_plan_and_verification(sdpa_adapter, sample, frames):
    exact = study("information_flow").run(context(sdpa_adapter, sample, frames))
    screen = study("information_flow").run(context(sdpa_adapter, sample, frames, plan="screen+verify 3"))
    assert screen.attrs["method"] == "screen" and "rel_change_exact" not in exact
    np.testing.assert_array_equal(screen["p_base"].values, exact["p_base"].values)
    verified = np.isfinite(screen["p_knockout_exact"].values)
    assert verified.sum() == 3
    np.testing.assert_allclose(
        screen["p_knockout_exact"].values[verified], exact["p_knockout"].values[verified], atol=1e-5
    )
    # the verified cells are the ones the screen estimates to move the probability most
    moved = np.abs(screen["p_knockout"].values - float(screen["p_base"]))
    assert moved[verified].min() >= moved[~verified].max()
    assert StudyConfig(plan="screen").to_dict()["method"] == "screen" and "method" not in StudyConfig().to_dict()


def test_screen_on_a_study_without_a_differentiable_metric_is_refused(sdpa_adapter):
    from mapflow.analysis.catalog import check_screenable

    with pytest.raises(KnockoutConfigError, match="--plan screen.*cross_frame_halves.*information_flow"):
        check_screenable(study("cross_frame_halves"), "cross_frame_halves", "screen")
    check_screenable(study("cross_frame_halves"), "cross_frame_halves", "auto")  # exact plans run anything
    with pytest.raises(KnockoutConfigError, match="locally only"):
        check_screenable(study("information_flow"), "information_flow", "screen", remote=True)
    with pytest.raises(KnockoutConfigError, match="--plan"):
        StudyConfig(plan="fast")


def test_calibration_metrics_on_known_cells():
    exact = np.array([-50.0, -40, -30, -20, -10, 0.5, 1, 2, np.nan])
    assert cell_metrics(exact, exact * 0.1)["spearman"] == pytest.approx(1.0)
    assert cell_metrics(exact, exact * 0.1)["top5_recall"] == 1.0
    swapped = exact.copy()
    swapped[[0, 7]] = swapped[[7, 0]]  # the most harmful cell ranked last by the screen
    metrics = cell_metrics(exact, swapped)
    assert metrics["top5_recall"] == 0.8 and metrics["sign_agreement"] == pytest.approx(6 / 8)
    assert metrics["cells"] == 8
    assert ranks(np.array([3.0, 1, 3, 2])).tolist() == [2.5, 0, 2.5, 1]


def test_calibrate_command(tiny_model_dir, tiny_benchmark, tmp_path, capsys):
    from mapflow.cli import main

    assert (
        main(
            [
                "calibrate",
                "information_flow",
                "--model",
                str(tiny_model_dir),
                "--data",
                str(tiny_benchmark),
                "--limit",
                "1",
                "--samples",
                "all",
                "--out",
                str(tmp_path),
                "--no-progress",
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "calibration-information_flow.json").read_text())
    assert set(report["flows"]) == set(study("information_flow").FLOWS)
    assert report["cost"]["screen_forward_equivalents"] >= 1 and report["cost"]["exact_forward_equivalents"] > 1
    assert all(-1 <= m["spearman"] <= 1 for m in report["flows"].values() if m["spearman"] == m["spearman"])
    assert "Spearman" in capsys.readouterr().out


def test_frame_pairs_and_heads_are_available_to_the_screen(sdpa_adapter, sample, frames):
    exact = study("frame_pairs").run(context(sdpa_adapter, sample, frames))
    screen = study("frame_pairs").run(context(sdpa_adapter, sample, frames, plan="screen"))
    assert screen.attrs["method"] == "screen"
    np.testing.assert_array_equal(np.isfinite(screen["p_knockout"].values), np.isfinite(exact["p_knockout"].values))
    heads = study("head_sweep").run(
        context(sdpa_adapter, sample, frames, plan="screen", options={"heads": "1"}, flows=("video->last",))
    )
    assert np.isfinite(heads["rel_change"].values).all() and heads["head"].values.tolist() == [1]
    # the first-order term is additive over heads: the single-head estimates sum to the all-heads one
    from mapflow.knockout.screen import screen_cells, screen_forward

    ctx = context(sdpa_adapter, sample, frames)
    cut = torch.from_numpy(Flow.parse("cross_frame").block_matrix(ctx.layout))
    fwd = screen_forward(sdpa_adapter, ctx.prepared)
    grads = fwd.gradients([int(fwd.logits.argmax())])
    layer_sets = [(0, 1), (2,), (1, 2, 3)]
    per_head = screen_cells(fwd, grads, [(cut, (h,)) for h in range(sdpa_adapter.num_heads)], layer_sets)
    every = screen_cells(fwd, grads, [(cut, None)], layer_sets)[0]
    assert (per_head.sum(0) - every).abs().max() <= 1e-5 * max(float(every.abs().max()), 1e-3)

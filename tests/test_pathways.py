"""Effective-pathway masks, edge counts, the random control and the Table E rule, against hand computations."""

import numpy as np
import pytest
import xarray as xr

from mapflow.errors import KnockoutConfigError
from mapflow.inputs.layout import Span, TokenLayout
from mapflow.readouts.pathways import (
    PathwayLayers,
    causal_edges,
    derive_layers,
    interval_means,
    kept_edges,
    parse_layers,
    pathway_masks,
    preset_layers,
    random_masks,
)


@pytest.fixture
def layout():
    """0-1 system, 2-5 video (2 frames x 2), 6 bridge, 7-10 question, 11 post-prompt, 12 last."""
    spans = {
        "system": Span("system", ((0, 2),)),
        "video": Span("video", ((2, 6),)),
        "bridge": Span("bridge", ((6, 7),)),
        "question": Span("question", ((7, 11),)),
        "post_prompt": Span("post_prompt", ((11, 12),)),
        "last": Span("last", ((12, 13),)),
    }
    frames = (Span("frame_0", ((2, 4),)), Span("frame_1", ((4, 6),)))
    spans.update({f.name: f for f in frames})
    return TokenLayout(seq_len=13, spans=spans, frames=frames, video_grid=(2, 1, 2))


LAYERS = PathwayLayers(cross_frame=(1,), video_question=(1, 2), question_last=(2, 3))


def test_masks_follow_the_seven_rules(layout):
    masks = pathway_masks(layout, LAYERS, num_layers=5)
    frame1, frame0 = [4, 5], [2, 3]
    for layer, m in enumerate(masks):
        assert m[12, 12] and m[12, 2:6].all()  # last->last and video->last in every layer
        assert m[np.ix_(frame1, frame0)].all() == (layer != 1)  # cross-frame open only in layer 1
        assert m[7:11, 2:6].all() == (layer not in (1, 2))  # video->question
        assert m[12, 7:11].all() == (layer not in (2, 3))  # question->last
        assert m[np.ix_(frame0, frame0)].all() == (layer >= 3)  # video->video from the end of video->question
        assert m[7:11, 7:11].all() == (layer >= 4)  # question->question from the end of question->last
        assert not m[:, :2].any()  # the system prompt stays readable
        assert not m[6].any() and not m[11].any()  # released code: bridge and post-prompt rows untouched


def test_strict_variant_closes_bridge_and_post_prompt_routes(layout):
    loose = pathway_masks(layout, LAYERS, 5)
    strict = pathway_masks(layout, LAYERS, 5, strict=True)
    for a, b in zip(loose, strict):
        assert b[6, 2:6].all() and b[11, 2:6].all() and b[11, 7:11].all()
        assert not b[11, :2].any() and not b[11, 6] and not b[11, 11]  # system, bridge and itself stay
        assert np.array_equal(a & ~_rows(13, [6, 11]), b & ~_rows(13, [6, 11]))  # nothing else changes


def _rows(n, rows):
    out = np.zeros((n, n), dtype=bool)
    out[rows] = True
    return out


def test_edge_counts_are_brute_force_counts(layout):
    masks = pathway_masks(layout, LAYERS, 5)
    brute = sum(1 for m in masks for q in range(13) for k in range(q + 1) if not m[q, k])
    assert kept_edges(masks) == brute
    assert causal_edges(13) == 91
    assert kept_edges([np.zeros((13, 13), dtype=bool)] * 3) == 3 * 91


def test_random_control_keeps_its_budget_region_and_seed(layout):
    a = random_masks(layout, num_blocked=60, num_layers=3, rng=np.random.default_rng(7))
    b = random_masks(layout, num_blocked=60, num_layers=3, rng=np.random.default_rng(7))
    c = random_masks(layout, num_blocked=60, num_layers=3, rng=np.random.default_rng(8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    for m in a:
        assert m.sum() == 20
        assert not m[:2].any() and not m[:, :2].any()  # system prompt untouched
        assert not np.triu(m, 1).any()  # only causal pairs
    assert not np.array_equal(a[0], a[1])  # drawn per layer


def test_table_e_rule_picks_intervals_below_minus_five():
    layers = np.arange(12)
    values = {
        "cross_frame": [-10] * 5 + [-1] * 5 + [0, 0],
        "video->question": [0] * 5 + [-6] * 5 + [-20, -20],
        "question->last": [-4.9] * 5 + [0] * 7,
    }
    data = np.stack([values[f] for f in values])[None].repeat(3, axis=0).astype(float)
    data[0, 0, 0] = np.nan  # NaN cells are left out of the mean
    rel = xr.DataArray(data, dims=("sample", "flow", "layer"), coords={"flow": list(values), "layer": layers})
    means = interval_means(rel, 5)
    assert means["interval"].values.tolist() == ["L1-5", "L6-10", "L11-12"]
    assert float(means.sel(flow="cross_frame", interval="L1-5")) == pytest.approx(-10)
    derived = derive_layers(rel, interval=5, threshold=-5)
    assert derived.cross_frame == tuple(range(5))
    assert derived.video_question == tuple(range(5, 12))
    assert derived.question_last == ()


def test_parse_and_presets():
    parsed = parse_layers("cross_frame=5-15;video_question=5-20;question_last=15-25,30-31")
    assert parsed.question_last == tuple(range(15, 25)) + (30,)
    assert preset_layers("llava-7b", 32) == PathwayLayers.from_ranges(
        cross_frame=(5, 15), video_question=(5, 20), question_last=(15, 25)
    )
    with pytest.raises(KnockoutConfigError, match="32 layers; this model has 8.*never scaled.*ranges=.*from="):
        preset_layers("llava-7b", 8)  # a preset is never scaled to another depth
    with pytest.raises(KnockoutConfigError, match="miss route"):
        parse_layers("cross_frame=1-2")
    with pytest.raises(KnockoutConfigError, match="unknown pathway preset"):
        preset_layers("gpt", 8)


def test_packed_masks_round_trip_bit_for_bit(layout):
    from mapflow.knockout.cells import pack_layer_masks, unpack_layer_masks

    for masks in (pathway_masks(layout, LAYERS, 5), random_masks(layout, 60, 3, np.random.default_rng(1))):
        bits = pack_layer_masks(masks)
        assert bits.nbytes * 8 < np.stack(masks).size + 8 * len(masks) * layout.seq_len  # one bit per edge, padded
        back = unpack_layer_masks(bits)
        assert sorted(back) == list(range(len(masks)))
        assert all(np.array_equal(back[i].numpy(), m) for i, m in enumerate(masks))


def test_layer_mask_readouts_equal_one_plain_forward_per_condition(adapter64, prepared64):
    """The one-request form of the effective-pathway conditions computes what separate forwards compute."""
    import torch

    from mapflow.knockout.cells import layer_mask_readouts, pack_layer_masks
    from mapflow.knockout.engine import run_layer_masks, run_naive

    layout = prepared64.layout
    num_layers = adapter64.num_layers
    layers = PathwayLayers(cross_frame=(0,), video_question=(0, 1), question_last=(1,))
    total = causal_edges(layout.seq_len) * num_layers
    effective = pathway_masks(layout, layers, num_layers)
    conditions = [effective, random_masks(layout, total - kept_edges(effective), num_layers, np.random.default_rng(0))]
    gt = 0  # any token: the readout is a probability of it
    out = layer_mask_readouts(adapter64, prepared64, tuple(pack_layer_masks(m) for m in conditions), gt)
    clean = run_naive(adapter64, prepared64).softmax(-1)
    assert out["clean"].tolist() == [int(clean.argmax()), float(clean.max()), float(clean[gt])]
    for i, masks in enumerate(conditions):
        probs = run_layer_masks(adapter64, prepared64, {j: torch.from_numpy(m) for j, m in enumerate(masks)}).softmax(
            -1
        )
        assert int(out["pred"][i]) == int(probs.argmax()) and float(out["p_gt"][i]) == float(probs[gt])
    assert not torch.equal(out["p_gt"], torch.full_like(out["p_gt"], float(clean[gt])))  # the masks changed something

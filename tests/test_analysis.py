import numpy as np
import pytest
import torch
from conftest import study_context as context
from tolerances import rel_change_bound, rounding_bound

from mapflow.inputs.prompts import LLAVA_OPEN_ENDED
from mapflow.knockout.flows import Flow, Window
from mapflow.knockout.masks import apply_knockout


def last_probabilities(adapter, prepared, blocked, layers):
    with torch.no_grad(), adapter.trace(prepared):
        apply_knockout(adapter.layers, blocked, layers)
        logits = adapter.lm_head.output[0, -1].save()
    return logits.softmax(-1)


def test_sweep_cells_match_a_direct_knockout(sdpa_adapter, adapter64, sample, frames):
    ctx = context(sdpa_adapter, sample, frames, window=Window("center", 3), samples="all")
    ds = ctx.sweep(["video->last", "cross_frame"])
    assert ds.rel_change.dims == ("flow", "layer")
    assert ds.flow.values.tolist() == ["video->last", "cross_frame"]
    assert ds.layer.values.tolist() == list(range(sdpa_adapter.num_layers))
    assert ds.blocked_layers.values.tolist() == ["0,1", "0,1,2", "1,2,3", "2,3"]
    # an independent trace of the (video->last, layer 0) cell, in float32 and in float64
    blocked = torch.from_numpy(Flow.parse("video->last").block_matrix(ctx.layout))
    prepared64 = context(adapter64, sample, frames).prepared
    knocked = last_probabilities(sdpa_adapter, ctx.prepared, blocked, [0, 1])
    knocked64 = last_probabilities(adapter64, prepared64, blocked, [0, 1])
    base = last_probabilities(sdpa_adapter, ctx.prepared, blocked, [])
    base64 = last_probabilities(adapter64, prepared64, blocked, [])
    pred = int(ds.pred_base)
    assert pred == int(base64.argmax())
    # probabilities within float32 rounding of float64; the relative change inherits their bound (over p_base)
    dp_knockout, dp_base = rounding_bound(knocked, knocked64), rounding_bound(base, base64)
    p_knockout, p_base = float(ds.p_knockout.sel(flow="video->last", layer=0)), float(ds.p_base)
    assert p_knockout == pytest.approx(float(knocked64[pred]), abs=dp_knockout)
    assert p_base == pytest.approx(float(base64[pred]), abs=dp_base)
    exact = (float(knocked64[pred]) - float(base64[pred])) / float(base64[pred]) * 100
    bound = rel_change_bound(p_knockout, p_base, dp_knockout, dp_base)
    assert float(ds.rel_change.sel(flow="video->last", layer=0)) == pytest.approx(exact, abs=bound)
    assert abs(exact) > 100 * bound  # the bound is far below the effect it measures
    assert int(ds.pred_knockout.sel(flow="video->last", layer=0)) == int(knocked.argmax())
    assert bool(ds.knocked_out)


def test_cross_frame_on_a_single_frame_is_the_baseline(sdpa_adapter, sample, frames):
    ctx = context(sdpa_adapter, sample, frames[:1], window=Window("center", 99), samples="all")
    ds = ctx.sweep(["cross_frame"])
    assert np.all(ds.rel_change.values == 0)


def test_samples_mode_skips_the_other_kind(sdpa_adapter, sample, frames):
    ctx = context(sdpa_adapter, sample, frames, window=Window("center", 3), samples="correct")
    clean = ctx.clean()
    ds = ctx.sweep(["video->last"])
    assert bool(ds.correct) == clean.correct
    assert bool(ds.knocked_out) == clean.correct
    assert np.isnan(ds.p_knockout.values).all() != clean.correct
    wrong = context(sdpa_adapter, sample, frames, window=Window("center", 3), samples="wrong").sweep(["video->last"])
    assert bool(wrong.knocked_out) != clean.correct


def test_ground_truth_token_rules(sdpa_adapter, sample, frames):
    ctx = context(sdpa_adapter, sample, frames)
    tok = sdpa_adapter.tokenizer
    assert tok.decode([ctx.answer_token_id()]) == "C"
    vocab = context(sdpa_adapter, sample, frames, gt_token="vocab")
    assert vocab.answer_token_id() == tok.convert_tokens_to_ids("C")


def test_open_ended_ground_truth_is_the_first_answer_word(sdpa_adapter, sample, frames):
    ctx = context(sdpa_adapter, sample, frames, template=LLAVA_OPEN_ENDED)
    assert ctx.prompt.answer_text == " left"  # "Down and to the left." -> left
    assert ctx.prepared.text.endswith(
        "Question: Which direction does the red square move in the video?\n ASSISTANT:\nThe red square moves to the"
    )
    token = ctx.answer_token_id()
    piece = sdpa_adapter.tokenizer.decode([token]).strip()
    assert piece and "left".startswith(piece)
    assert "question" in ctx.layout.spans and "true_option" not in ctx.layout.spans
    ds = ctx.sweep(["video->last"])
    assert int(ds.answer_token) == token

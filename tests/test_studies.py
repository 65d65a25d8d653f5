"""Every study of the paper on a tiny random model, each checked against an independent computation."""

import importlib

import numpy as np
import pytest
import torch
import xarray as xr
from conftest import study_context as context

from mapflow.analysis.context import CleanRun
from mapflow.knockout.flows import Flow, Window
from mapflow.readouts.pathways import kept_edges, parse_layers, pathway_masks


def study(name):
    return importlib.import_module(f"mapflow.studies.{name}")


def plain_probs(adapter, prepared, blocked_by_layer=None):
    """Last-position probabilities from the HF model with torch pre-hooks giving layers their masks (no nnsight)."""
    n = prepared.layout.seq_len
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    layers = adapter.hf_model.model.language_model.layers
    handles = []
    for i, blocked in (blocked_by_layer or {}).items():
        mask = (causal & ~torch.as_tensor(blocked))[None, None]
        handles.append(
            layers[i].register_forward_pre_hook(
                lambda module, args, kwargs, mask=mask: (args, {**kwargs, "attention_mask": mask}), with_kwargs=True
            )
        )
    try:
        with torch.no_grad():
            return adapter.hf_model(**prepared.inputs).logits[0, -1].float().softmax(-1)
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize(
    "name,dim,windows",
    [
        ("window_sizes", "window_size", {1: Window("center", 1), 3: Window("center", 3)}),
        ("progressive", "direction", {"bottom_up": Window("bottom_up"), "top_down": Window("top_down")}),
    ],
)
def test_window_studies_equal_separate_sweeps(sdpa_adapter, sample, frames, name, dim, windows):
    ctx = context(sdpa_adapter, sample, frames, samples="all", options={"sizes": "1,3"})
    ds = study(name).run(ctx)
    assert ds[dim].values.tolist() == list(windows)
    for label, window in windows.items():
        alone = ctx.sweep(["cross_frame"], window=window)
        np.testing.assert_allclose(ds.p_knockout.sel({dim: label}).values, alone.p_knockout.values, atol=1e-6)
        assert ds.blocked_layers.sel({dim: label}).values.tolist() == alone.blocked_layers.values.tolist()
    assert ds.p_base.dims == ()  # clean-run values stay per sample


def test_progressive_accuracy_counts_correct_answers():
    from mapflow.viz.figures import progressive_accuracy

    pred = np.array([[[[5, 5]], [[5, 6]]], [[[6, 6]], [[5, 5]]]])  # (sample, direction, flow, layer)
    ds = xr.Dataset(
        {
            "pred_knockout": (("sample", "direction", "flow", "layer"), pred),
            "answer_token": (("sample",), [5, 5]),
            "knocked_out": (("sample",), [True, True]),
        },
        coords={"direction": ["bottom_up", "top_down"], "flow": ["cross_frame"], "layer": [0, 1]},
    )
    acc = progressive_accuracy(ds)
    assert acc.sel(direction="bottom_up").values.tolist() == [50.0, 50.0]
    assert acc.sel(direction="top_down").values.tolist() == [100.0, 50.0]


def test_predicted_false_option_span(sdpa_adapter, sample, frames):
    ctx = context(sdpa_adapter, sample, frames, samples="all")
    tokens = ctx.option_tokens()
    false_letter = next(letter for letter in tokens if letter != sample.answer_letter)
    fake = CleanRun(
        logits=None, pred=tokens[false_letter], p_base=0.5, gt_token=tokens[sample.answer_letter], p_gt_base=0.1
    )
    layout = ctx.layout_with_prediction(fake)
    assert layout.positions("predicted_option").tolist() == ctx.layout.positions(f"option_{false_letter}").tolist()
    right = CleanRun(logits=None, pred=tokens[sample.answer_letter], p_base=0.5, gt_token=fake.gt_token, p_gt_base=0.5)
    assert "predicted_option" not in ctx.layout_with_prediction(right).spans


def test_failure_study_measures_predicted_option_flows_only_when_a_false_letter_is_predicted(
    sdpa_adapter, sample, frames
):
    ctx = context(sdpa_adapter, sample, frames, samples="all", window=Window("center", 3))
    ds = study("failure_cases").run(ctx)
    clean = ctx.clean()
    tokens = ctx.option_tokens()
    predicted_false = clean.pred in [t for letter, t in tokens.items() if letter != sample.answer_letter]
    into_predicted = ds.p_knockout.sel(flow="video->predicted_option").values
    assert np.isfinite(into_predicted).all() == predicted_false
    assert np.isfinite(ds.p_knockout.sel(flow="cross_frame").values).all()
    if predicted_false:  # the cell equals a direct knockout of video -> that option in layers 0-1
        letter = next(letter for letter, t in tokens.items() if t == clean.pred)
        blocked = Flow.parse(f"video->option_{letter}").block_matrix(ctx.layout)
        probs = plain_probs(sdpa_adapter, ctx.prepared, {0: blocked, 1: blocked})
        assert float(ds.p_knockout.sel(flow="video->predicted_option", layer=0)) == pytest.approx(
            float(probs[clean.pred]), abs=1e-5
        )


def test_answer_probability_last_layer_is_the_models_output(sdpa_adapter, sample, frames):
    ctx = context(sdpa_adapter, sample, frames)
    ds = study("answer_probability").run(ctx)
    probs = plain_probs(sdpa_adapter, ctx.prepared)
    tokens = ctx.option_tokens()
    last = ds.p_option.isel(layer=-1)
    for letter in ds.option.values:
        if letter in tokens:
            assert float(last.sel(option=letter)) == pytest.approx(100 * float(probs[tokens[letter]]), abs=1e-4)
        else:
            assert np.isnan(float(last.sel(option=letter)))
    assert ds.is_true_option.values.tolist() == [s == sample.answer_letter for s in ds.option.values]


def test_logit_lens_marks_exactly_the_keyword_pieces(sdpa_adapter, sample, frames, tmp_path):
    from mapflow.readouts.lens import layer_top_tokens

    video = context(sdpa_adapter, sample, frames).layout.positions("video")
    tops = layer_top_tokens(sdpa_adapter, context(sdpa_adapter, sample, frames).prepared, video)
    decode = sdpa_adapter.tokenizer.decode
    common = [decode([int(t)]).strip().lower() for t in torch.unique(tops)]
    words = [w for w in common if w.isalpha()][:2] or ["zzz"]
    (tmp_path / "spatial.txt").write_text(words[0] + "\n")
    (tmp_path / "temporal.txt").write_text("\n".join(words[1:]) + "\n")
    ctx = context(sdpa_adapter, sample, frames, options={"keywords": str(tmp_path)})
    ds = study("logit_lens").run(ctx)
    assert np.array_equal(ds.top_token.values, tops.numpy())
    pieces = np.vectorize(lambda t: decode([int(t)]).strip().lower())(ds.top_token.values)
    tokenizer = sdpa_adapter.tokenizer
    spatial = {
        decode(tokenizer(v, add_special_tokens=False)["input_ids"][:1]).strip().lower()
        for v in (words[0], " " + words[0])
    }
    assert np.array_equal(ds.keyword_kind.values == "spatial", np.isin(pieces, list(spatial)))
    assert (ds.keyword_kind.values == "spatial").any()
    assert set(ds.keyword.values[ds.keyword_kind.values == "spatial"]) == {words[0]}
    assert ds.frame_pixels.shape == (len(frames), 96, 96, 3)
    layout = ctx.layout
    for i, position in enumerate(video):  # each token's frame is the frame span holding its position
        assert position in layout.frames[int(ds.frame.values[i])].positions()


def test_attention_maps_rows_and_padding(sdpa_adapter, sample, frames):
    from mapflow.readouts.attention import attention_rows

    ctx = context(sdpa_adapter, sample, frames, options={"max_queries": "40"})
    ds = study("attention_maps").run(ctx)
    used = ds.query_position.values[ds.query_position.values >= 0]
    assert len(used) > 0 and np.isnan(ds.attention.values[:, :, len(used) :]).all()
    clean = attention_rows(sdpa_adapter, ctx.prepared, used, ctx.layout.positions("video"))
    np.testing.assert_allclose(ds.attention.sel(condition="clean").values[:, : len(used)], clean.numpy(), atol=1e-6)
    texts = [sdpa_adapter.tokenizer.decode([int(ctx.prepared.inputs["input_ids"][0, p])]) for p in used]
    assert ds.query_text.values[: len(used)].tolist() == texts
    knocked = ds.attention.sel(condition="cross_frame_knockout").values
    frame0 = np.isin(ctx.layout.positions("video"), ctx.layout.frames[0].positions())
    assert np.all(np.isfinite(knocked[:, : len(used)]))
    assert not np.allclose(
        knocked[:, : len(used)][..., ~frame0], ds.attention.sel(condition="clean").values[:, : len(used)][..., ~frame0]
    )


def test_effective_pathway_study_against_hooks_and_hand_counts(sdpa_adapter, sample, frames):
    ranges = "cross_frame=0-2;video_question=0-3;question_last=2-4"
    ctx = context(sdpa_adapter, sample, frames, options={"ranges": ranges}, seed=3)
    ds = study("effective_pathway").run(ctx)
    masks = pathway_masks(ctx.layout, parse_layers(ranges), sdpa_adapter.num_layers)
    assert int(ds.edges_kept.sel(condition="effective")) == kept_edges(masks)
    n = ctx.layout.seq_len
    assert int(ds.edges_total) == sdpa_adapter.num_layers * n * (n + 1) // 2
    probs = plain_probs(sdpa_adapter, ctx.prepared, dict(enumerate(masks)))
    gt = int(ctx.clean().gt_token)
    assert float(ds.p_answer.sel(condition="effective")) == pytest.approx(float(probs[gt]), abs=1e-5)
    assert int(ds.pred.sel(condition="effective")) == int(probs.argmax())
    budget = int(ds.edges_total) - kept_edges(masks)
    per_layer = budget // sdpa_adapter.num_layers
    assert int(ds.edges_kept.sel(condition="random")) == int(ds.edges_total) - per_layer * sdpa_adapter.num_layers
    again = study("effective_pathway").run(ctx)  # the seeded control is reproducible
    assert float(again.p_answer.sel(condition="random")) == float(ds.p_answer.sel(condition="random"))
    assert ds.open_layers.values.tolist() == ["0-2", "0-3", "2-4"]


def test_effective_pathway_random_block_ratio_is_the_released_scripts_budget(sdpa_adapter, sample, frames):
    """``random_block_ratio=R``: int(R x N(N+1)/2) pairs blocked in every layer, in both controls (unless the
    post-video region has fewer pairs); a ratio outside (0, 1) is refused."""
    ranges = "cross_frame=0-2;video_question=0-3;question_last=2-4"
    ctx = context(sdpa_adapter, sample, frames, options={"ranges": ranges, "random_block_ratio": "0.3"}, seed=3)
    ds = study("effective_pathway").run(ctx)
    n, layers = ctx.layout.seq_len, sdpa_adapter.num_layers
    first = int(ctx.layout.positions("video").min())
    per_layer = min(int(0.3 * (n * (n + 1) // 2)), (n - first) * (n - first + 1) // 2)
    for name in ("random", "random_strict"):
        assert int(ds.edges_kept.sel(condition=name)) == int(ds.edges_total) - per_layer * layers, name
    bad = context(sdpa_adapter, sample, frames, options={"ranges": ranges, "random_block_ratio": "1.2"}, seed=3)
    from mapflow.errors import MapflowError

    with pytest.raises(MapflowError, match="random_block_ratio=1.2"):
        study("effective_pathway").run(bad)


def test_halves_study_generates_the_same_text_as_hf(sdpa_adapter, sample, frames):
    """Table 2's answers are open-ended: generated from the sample asked with the open-ended template."""
    from mapflow.inputs.prompts import LLAVA_OPEN_ENDED, build_prompt

    ctx = context(sdpa_adapter, sample, frames, options={"generate": "3"})
    ds = study("cross_frame_halves").run(ctx)
    open_ended = sdpa_adapter.prepare(frames, build_prompt(sample, LLAVA_OPEN_ENDED).segments)
    with torch.no_grad():
        out = sdpa_adapter.hf_model.generate(
            **open_ended.inputs, max_new_tokens=3, do_sample=False, pad_token_id=sdpa_adapter.tokenizer.pad_token_id
        )
    new_ids = out[0, open_ended.layout.seq_len :].tolist()
    eos = sdpa_adapter.tokenizer.eos_token_id
    expected = sdpa_adapter.tokenizer.decode(new_ids[: new_ids.index(eos)] if eos in new_ids else new_ids)
    assert str(ds.clean_answer_text.values) == expected  # greedy_generate stops before the end-of-sequence token
    assert str(ds.answer_template.values) == "llava_open_ended"
    assert ds.answer_text.dims == ("flow", "layers")


def test_verb_anchor_helpers():
    from mapflow.studies.verb_anchors import find_anchors, response_span

    pieces = [" The", " man", " pick", "s", " up", " a", " cup", " and", " walks"]
    assert find_anchors(pieces, {"picks", "walks"}) == [2, 8]
    assert find_anchors(pieces, {"man"}) == [1]
    assert response_span(100, anchor=5, previous_anchor=None, num_open=1) == [100, 101, 102]
    assert response_span(100, anchor=5, previous_anchor=3, num_open=3) == [100, 101, 102, 103]


def test_verb_anchor_study_reads_the_anchor_token(sdpa_adapter, sample, frames, monkeypatch):
    import mapflow.studies.verb_anchors as verb_anchors

    # every piece of the generated text counts as a verb, so anchors exist even in a random model's output
    def every_substring(text):
        text = text.lower()
        return {text[i:j].strip() for i in range(len(text)) for j in range(i + 1, len(text) + 1)}

    monkeypatch.setattr(verb_anchors, "verb_detector", lambda *a, **k: (every_substring, "test"))
    ctx = context(
        sdpa_adapter, sample, frames, window=Window("center", 3), options={"max_new_tokens": "6", "min_anchors": "1"}
    )
    ds = verb_anchors.run(ctx)
    assert ds.anchor.values.tolist() == [1, 2, 3]
    generated = sdpa_adapter.tokenizer(str(ds.response_text.values), add_special_tokens=False)["input_ids"]
    measured = [a for a in ds.anchor.values if bool(ds.knocked_out.sel(anchor=a))]
    assert measured, "the test needs at least one measured anchor"
    from mapflow.readouts.generation import greedy_generate

    tokens = greedy_generate(sdpa_adapter, ctx.prepared, max_new_tokens=6)
    for anchor in measured:
        token = int(ds.answer_token.sel(anchor=anchor))
        position = tokens.index(token)
        from mapflow.readouts.generation import extend_input

        grown = extend_input(ctx.prepared, tokens[:position])
        probs = plain_probs(sdpa_adapter, grown)
        assert float(ds.p_base.sel(anchor=anchor)) == pytest.approx(float(probs[token]), abs=1e-5)
    assert len(generated) > 0


@pytest.mark.parametrize("name", ["cross_frame", "information_flow", "question_options_to_last", "into_true_option"])
def test_flow_studies_match_plain_torch_knockouts(sdpa_adapter, sample, frames, name):
    """Each flow study's cells equal the HF model run with torch pre-hooks cutting the same edges (no nnsight)."""
    ctx = context(sdpa_adapter, sample, frames, samples="all", window=Window("center", 3))
    ds = study(name).run(ctx)
    pred = int(ds.pred_base)
    for flow in ds.flow.values:
        blocked = Flow.parse(str(flow)).block_matrix(ctx.layout)
        for layer in (0, sdpa_adapter.num_layers - 1):
            layers = [int(i) for i in str(ds.blocked_layers.sel(layer=layer).values).split(",")]
            probs = plain_probs(sdpa_adapter, ctx.prepared, {i: blocked for i in layers})
            assert float(ds.p_knockout.sel(flow=flow, layer=layer)) == pytest.approx(float(probs[pred]), abs=1e-5)

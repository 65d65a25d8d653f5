"""Readouts checked against plain Hugging Face forwards (no nnsight): layer-wise probabilities, logit lens,
attention rows, greedy generation and per-layer masks."""

import numpy as np
import pytest
import torch
from tolerances import assert_float32_exact

from mapflow.knockout.engine import run_layer_masks
from mapflow.knockout.flows import Flow
from mapflow.models import load_adapter
from mapflow.readouts.attention import attention_rows
from mapflow.readouts.generation import extend_input, greedy_generate
from mapflow.readouts.lens import layer_token_probabilities, layer_top_tokens


@pytest.fixture(scope="module")
def eager_adapter(tiny_model_dir):
    return load_adapter(tiny_model_dir, attn_implementation="eager")


def hf_hidden_states(adapter, prepared):
    """Residual stream per HF's own ``hidden_states``: [embeddings, after layer 0, ..., final-normed last layer]."""
    with torch.no_grad():
        out = adapter.hf_model(**prepared.inputs, output_hidden_states=True)
    return out.hidden_states, out.logits[0, -1].float()


def language_model(adapter):
    return adapter.hf_model.model.language_model


def test_layer_probabilities_match_a_plain_forward(sdpa_adapter, prepared):
    ids = [3, 7, 11]
    hidden, logits = hf_hidden_states(sdpa_adapter, prepared)
    lm = language_model(sdpa_adapter)
    head = sdpa_adapter.hf_model.lm_head
    paper = layer_token_probabilities(sdpa_adapter, prepared, ids)
    released = layer_token_probabilities(sdpa_adapter, prepared, ids, convention="released_code")
    last = sdpa_adapter.num_layers - 1
    torch.testing.assert_close(paper[last], logits.softmax(-1)[ids], atol=1e-6, rtol=0)
    torch.testing.assert_close(released[last], paper[last], atol=0, rtol=0)
    with torch.no_grad():
        for i in range(last):
            raw = hidden[i + 1][0, -1]  # output of layer i, before any norm
            torch.testing.assert_close(paper[i], head(lm.norm(raw)).float().softmax(-1)[ids], atol=1e-6, rtol=0)
            torch.testing.assert_close(released[i], head(raw).float().softmax(-1)[ids], atol=1e-6, rtol=0)
    assert not torch.allclose(paper[0], released[0])  # the two conventions really differ


def test_logit_lens_top_tokens_match_a_plain_forward(sdpa_adapter, prepared):
    video = prepared.layout.positions("video")
    hidden, _ = hf_hidden_states(sdpa_adapter, prepared)
    lm = language_model(sdpa_adapter)
    head = sdpa_adapter.hf_model.lm_head
    embeddings = lm.embed_tokens.weight
    paper = layer_top_tokens(sdpa_adapter, prepared, video)
    released = layer_top_tokens(sdpa_adapter, prepared, video, convention="released_code")
    last = sdpa_adapter.num_layers - 1
    with torch.no_grad():
        for i in range(sdpa_adapter.num_layers):
            normed = lm.norm(hidden[i + 1][0, video]) if i < last else hidden[i + 1][0, video]
            assert torch.equal(paper[i], head(normed).argmax(-1))
            entering = hidden[i][0, video] if i < last else hidden[i + 1][0, video]
            assert torch.equal(released[i], (entering @ embeddings.T).argmax(-1))


@pytest.mark.parametrize("pool", ["mean", "max"])
def test_attention_rows_match_eager_attention_weights(eager_adapter, adapter64, sample, frames, pool):
    from conftest import prepare_mcqa

    prepared = prepare_mcqa(eager_adapter, sample, frames)
    layout = prepared.layout
    queries = layout.positions("question")[:5]
    keys = layout.positions("video")

    def eager_rows(adapter):
        with torch.no_grad():
            inputs = prepare_mcqa(adapter, sample, frames).inputs
            weights = adapter.hf_model(**inputs, output_attentions=True).attentions
        rows = [w[0][:, queries][:, :, keys] for w in weights]
        return [r.mean(0) if pool == "mean" else r.amax(0) for r in rows]

    ours = attention_rows(eager_adapter, prepared, queries, keys, head_pool=pool)
    for i, (plain, exact) in enumerate(zip(eager_rows(eager_adapter), eager_rows(adapter64))):
        assert_float32_exact(ours[i], plain, exact, f"layer {i}")


def test_attention_rows_under_knockout_match_the_models_own_weights(eager_adapter, adapter64, sample, frames):
    """With cross-frame knockout in layers 0-1, the recomputed rows equal eager attention's own probabilities from a
    trace that applies the same knockout; and frame-1 queries give earlier frames exactly zero."""
    import nnsight
    from conftest import prepare_mcqa

    from mapflow.knockout.masks import apply_knockout

    prepared = prepare_mcqa(eager_adapter, sample, frames)
    layout = prepared.layout
    blocked = torch.from_numpy(Flow.parse("cross_frame").block_matrix(layout))
    queries = np.concatenate([layout.frames[1].positions()[:2], layout.positions("question")[:3]])
    keys = layout.positions("video")
    ours = attention_rows(eager_adapter, prepared, queries, keys, blocked=blocked, knockout_layers=[0, 1])

    def knocked_out_rows(adapter):
        with torch.no_grad(), adapter.trace(prepare_mcqa(adapter, sample, frames)):
            weights = []
            for i in range(adapter.num_layers):  # execution order: a layer's mask, then its attention
                if i < 2:
                    apply_knockout(adapter.layers, blocked, [i])
                weights.append(adapter.attention(i).output[1])
            weights = nnsight.save(weights)
        return [w[0][:, queries][:, :, keys].mean(0) for w in weights]

    for i, (plain, exact) in enumerate(zip(knocked_out_rows(eager_adapter), knocked_out_rows(adapter64))):
        assert_float32_exact(ours[i], plain, exact, f"layer {i}")
    frame0 = np.isin(keys, layout.frames[0].positions())
    assert torch.all(ours[0, :2][:, torch.from_numpy(frame0)] == 0)
    assert torch.any(ours[2, :2][:, torch.from_numpy(frame0)] > 0)  # layer 2 is not knocked out


def test_greedy_generation_matches_hf_generate(sdpa_adapter, prepared):
    ours = greedy_generate(sdpa_adapter, prepared, max_new_tokens=5)
    with torch.no_grad():
        out = sdpa_adapter.hf_model.generate(
            **prepared.inputs,
            max_new_tokens=5,
            do_sample=False,
            eos_token_id=sdpa_adapter.tokenizer.eos_token_id,
            pad_token_id=sdpa_adapter.tokenizer.pad_token_id,
        )
    theirs = out[0, prepared.layout.seq_len :].tolist()
    assert ours == theirs[: len(ours)]
    assert len(ours) == 5 or theirs[len(ours)] == sdpa_adapter.tokenizer.eos_token_id


def test_extended_input_moves_the_last_position(sdpa_adapter, prepared):
    grown = extend_input(prepared, [5, 6], response=[prepared.layout.seq_len])
    assert grown.layout.seq_len == prepared.layout.seq_len + 2
    assert grown.layout.positions("last").tolist() == [prepared.layout.seq_len + 1]
    assert grown.layout.positions("response").tolist() == [prepared.layout.seq_len]
    assert grown.layout.positions("video").tolist() == prepared.layout.positions("video").tolist()


def test_per_layer_masks_match_plain_torch_hooks(sdpa_adapter, prepared, adapter64, prepared64):
    """run_layer_masks (nnsight) == forward pre-hooks that hand each decoder layer its own boolean mask."""
    layout = prepared.layout
    per_layer = {
        0: Flow.parse("cross_frame").block_matrix(layout),
        2: Flow.parse("video->last").block_matrix(layout),
        3: Flow.parse("question->last+cross_frame").block_matrix(layout),
    }
    per_layer = {i: torch.from_numpy(m) for i, m in per_layer.items()}
    ours = run_layer_masks(sdpa_adapter, prepared, per_layer)
    causal = torch.ones(layout.seq_len, layout.seq_len, dtype=torch.bool).tril()

    def hook_for(blocked):
        def hook(module, args, kwargs):
            kwargs["attention_mask"] = (causal & ~blocked)[None, None]
            return args, kwargs

        return hook

    layers = language_model(sdpa_adapter).layers
    handles = [layers[i].register_forward_pre_hook(hook_for(b), with_kwargs=True) for i, b in per_layer.items()]
    try:
        with torch.no_grad():
            expected = sdpa_adapter.hf_model(**prepared.inputs).logits[0, -1].float()
    finally:
        for h in handles:
            h.remove()
    assert_float32_exact(ours, expected, run_layer_masks(adapter64, prepared64, per_layer))
    with torch.no_grad():
        clean = sdpa_adapter.hf_model(**prepared.inputs).logits[0, -1].float()
    assert (ours - clean).abs().max() > 1e-4

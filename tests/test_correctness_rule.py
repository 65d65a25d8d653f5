"""The knockout studies judge a sample correct by the documented rule (decoded text by default, token ids with
``--option correct_by=token``), filter on it where the logits are, and store both rules.

The tiny model is made to answer the lower-case ``c`` while the true option is ``C``: the two rules disagree (ids
differ, decoded text matches ignoring case), which is the ``▁A`` vs ``A`` case of a SentencePiece vocabulary.
"""

import numpy as np
import pytest
import torch
from conftest import study_context


@pytest.fixture(scope="module")
def lowercase_answering_adapter(tiny_model_dir, sample, frames):
    """A fresh copy of the tiny model whose LM head makes ``c`` its clean answer on the test sample."""
    from mapflow.inputs.prompts import LLAVA_MCQA, build_prompt
    from mapflow.models import load_adapter

    adapter = load_adapter(tiny_model_dir, attn_implementation="eager", self_test=False)
    prompt = build_prompt(sample, LLAVA_MCQA)
    assert prompt.true_letter == "C"
    prepared = adapter.prepare(
        frames, prompt.segments, option_letters=prompt.option_letters, true_letter=prompt.true_letter
    )
    with torch.no_grad(), adapter.trace(prepared):
        hidden = adapter.final_norm.output[0, -1].save()
    lower_c = adapter.tokenizer.convert_tokens_to_ids("c")
    assert adapter.tokenizer.decode([lower_c]) == "c"
    with torch.no_grad():  # a row along the last hidden state: by far the largest logit
        adapter.hf_model.lm_head.weight[lower_c] = 50 * hidden / hidden.norm()
    return adapter, lower_c


# module-scoped copies of the conftest fixtures the module fixture needs
@pytest.fixture(scope="module")
def sample():
    from mapflow.data.sample import Sample

    return Sample(
        "moving_direction/0000",
        "moving_direction",
        "unused.mp4",
        "Which direction does the red square move in the video?",
        ("Up and to the left.", "Up and to the right.", "Down and to the left."),
        2,
    )


@pytest.fixture(scope="module")
def frames():
    return np.random.default_rng(0).integers(0, 256, (4, 40, 48, 3), dtype=np.uint8)


def _cross_frame(adapter, sample, frames, **options):

    ctx = study_context(adapter, sample, frames, options=options)
    return ctx, ctx.sweep(["cross_frame"], layers=[1])


def test_text_rule_decides_the_filter(lowercase_answering_adapter, sample, frames):
    from mapflow.results.metrics import correctness_disagreements

    adapter, lower_c = lowercase_answering_adapter
    ctx, ds = _cross_frame(adapter, sample, frames)
    assert int(ds["pred_base"]) == lower_c != int(ds["answer_token"])
    assert bool(ds["correct_text"]) and not bool(ds["correct_token"])
    assert bool(ds["correct"]) and bool(ds["knocked_out"])  # the documented default: decoded text
    assert np.isfinite(ds["p_knockout"].values).all()
    # after the knockout the same rule judges the new prediction
    still_c = ds["pred_knockout"].values == lower_c
    assert (ds["correct_knockout"].values == still_c).all()
    assert correctness_disagreements(ds.expand_dims(sample=[0])) == 1


def test_token_rule_option_decides_the_filter(lowercase_answering_adapter, sample, frames):
    adapter, _ = lowercase_answering_adapter
    _, ds = _cross_frame(adapter, sample, frames, correct_by="token")
    assert bool(ds["correct_text"]) and not bool(ds["correct_token"])
    assert not bool(ds["correct"]) and not bool(ds["knocked_out"])
    assert np.isnan(ds["p_knockout"].values).all()
    # the other sample mode of the same rule knocks it out
    ctx = study_context(adapter, sample, frames, samples="wrong", options={"correct_by": "token"})

    wrong = ctx.sweep(["cross_frame"], layers=[1])
    assert bool(wrong["knocked_out"]) and np.isfinite(wrong["p_knockout"].values).all()


def test_text_rule_tokens_match_decoding(sdpa_adapter):
    """The id set the server applies is exactly the ids whose decoded piece passes the released comparison."""
    from mapflow.analysis.clean import text_rule_tokens

    tokenizer = sdpa_adapter.tokenizer
    accepted = text_rule_tokens(tokenizer, "C")
    assert accepted == {i for i in range(len(tokenizer)) if tokenizer.decode([i]).lower() == "c"}
    assert {tokenizer.convert_tokens_to_ids("C"), tokenizer.convert_tokens_to_ids("c")} <= accepted


def test_unknown_rule_is_refused(sdpa_adapter, sample, frames):
    with pytest.raises(ValueError, match="correct_by"):
        _cross_frame(sdpa_adapter, sample, frames, correct_by="letters")


# --- on the published Vicuna tokenizer (LLaVA-NeXT-Video-7B): a predicted `▁A` against the continuation token `A` ---
LLAMA_A, LLAMA_SPACE_A = 29909, 319  # LLaMA's `A` and `▁A`


def test_text_rule_on_vicuna_accepts_both_spellings(real_tokenizers):
    from mapflow.analysis.clean import text_rule_tokens
    from mapflow.inputs.real_tokenizers import load_real_tokenizer

    vicuna = load_real_tokenizer("vicuna")
    assert vicuna.convert_tokens_to_ids(["A", "▁A"]) == [LLAMA_A, LLAMA_SPACE_A]
    accepted = text_rule_tokens(vicuna, "A")
    assert {LLAMA_A, LLAMA_SPACE_A} <= accepted
    assert all(vicuna.decode([i]).lower() == "a" for i in accepted)


@pytest.fixture(scope="module")
def vicuna_space_a_adapter(tmp_path_factory, real_tokenizers):
    """The real-inputs LLaVA-NeXT-Video checkpoint made to answer `▁A` on a question whose answer is (A."""
    from mapflow.data.sample import Sample
    from mapflow.inputs.prompts import LLAVA_MCQA, build_prompt
    from mapflow.models import load_adapter
    from mapflow.testing.real_inputs import build_real_inputs_checkpoint

    path = build_real_inputs_checkpoint("llava_next_video", tmp_path_factory.mktemp("real") / "llava", seed=3)
    adapter = load_adapter(path, attn_implementation="eager", self_test=False)
    sample = Sample(
        "moving_direction/0001",
        "moving_direction",
        "unused.mp4",
        "Which direction does the red square move in the video?",
        ("Up and to the left.", "Up and to the right.", "Down and to the left."),
        0,
    )
    size = adapter.default_frame_size()
    clip = np.random.default_rng(5).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    prompt = build_prompt(sample, LLAVA_MCQA)
    prepared = adapter.prepare(
        clip, prompt.segments, option_letters=prompt.option_letters, true_letter=prompt.true_letter
    )
    with torch.no_grad(), adapter.trace(prepared):
        hidden = adapter.final_norm.output[0, -1].save()
    with torch.no_grad():
        adapter.hf_model.lm_head.weight[LLAMA_SPACE_A] = 50 * hidden / hidden.norm()
    return adapter, sample, clip


@pytest.mark.parametrize("rule, knocked_out", [("text", True), ("token", False)])
def test_filter_follows_the_rule_on_vicuna(vicuna_space_a_adapter, rule, knocked_out):
    from mapflow.inputs.prompts import LLAVA_MCQA

    adapter, sample, clip = vicuna_space_a_adapter
    ctx = study_context(adapter, sample, clip, LLAVA_MCQA, options={"correct_by": rule})
    assert ctx.answer_token_id() == LLAMA_A  # `A` as it follows `Best option:(`
    ds = ctx.sweep(["cross_frame"], layers=[0])
    assert int(ds["pred_base"]) == LLAMA_SPACE_A
    assert bool(ds["correct_text"]) and not bool(ds["correct_token"])
    assert bool(ds["knocked_out"]) == knocked_out == bool(ds["correct"])
    assert np.isfinite(ds["p_knockout"].values).all() == knocked_out

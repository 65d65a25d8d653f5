"""Fidelity to the paper's released code (issue 14): each test fails on the behaviour the audit found."""

import numpy as np
import pytest
import torch

from mapflow.data.sample import Sample


# ---- verb anchors (appendix C.2) -------------------------------------------------------------------------------

def test_anchor_at_the_third_generated_token_keeps_one_response_token():
    from studies.verb_anchors import response_span

    # anchor index 2: the input ends at generated token 1 (the last); token 0 is the only earlier response token.
    # The released code's end = max(1, len - num_open) keeps it; without the floor the span was empty (NaN sample)
    assert response_span(100, anchor=2, previous_anchor=None, num_open=1) == [100]
    assert response_span(100, anchor=1, previous_anchor=None, num_open=1) == []  # no earlier response token at all
    assert response_span(100, anchor=5, previous_anchor=None, num_open=1) == [100, 101, 102]


def test_verb_anchor_reference_response_is_256_tokens_by_default(monkeypatch):
    import studies.verb_anchors as verb_anchors

    seen = {}

    class Stop(Exception):
        pass

    def fake_generate(adapter, prepared, *, max_new_tokens, **kwargs):
        seen["max_new_tokens"] = max_new_tokens
        raise Stop

    class Ctx:
        class config:
            @staticmethod
            def option(name, default=None):
                return {"verbs": "list"}.get(name, default)
        adapter = prepared = None

    monkeypatch.setattr(verb_anchors, "greedy_generate", fake_generate)
    with pytest.raises(Stop):
        verb_anchors.run(Ctx())
    assert seen["max_new_tokens"] == 256


def test_vcgbench_system_prompt_has_no_trailing_newline():
    from mapflow.prompts import VCGBENCH_FREE_FORM, build_prompt, prompt_text

    sample = Sample("temporal_qa/0", "temporal_qa", "v.mp4", "What happens first?", (), -1,
                    reference_answer="A man opens a door.")
    text = prompt_text(build_prompt(sample, VCGBENCH_FREE_FORM).segments)
    # released: "{SYSTEM} USER: <image>\n USER: {q} ASSISTANT:" with SYSTEM ending "...based on the provided video."
    assert "based on the provided video. USER: <video>\n USER: What happens first? ASSISTANT:" in text


# ---- correctness as the released code compares it ----------------------------------------------------------------

def _context(adapter, sample, frames, **config):
    from mapflow.analysis import StudyConfig, StudyContext
    from mapflow.prompts import LLAVA_MCQA, build_prompt

    prompt = build_prompt(sample, LLAVA_MCQA)
    prepared = adapter.prepare(frames, prompt.segments, option_letters=prompt.option_letters,
                               true_letter=prompt.true_letter)
    return StudyContext(adapter=adapter, sample=sample, prepared=prepared, config=StudyConfig(**config),
                        prompt=prompt, frames=frames)


def _logits_for(adapter, token: int) -> torch.Tensor:
    logits = torch.zeros(adapter.hf_model.get_output_embeddings().weight.shape[0])
    logits[token] = 10.0
    return logits


def test_a_lower_case_or_spaced_letter_is_correct_as_in_the_released_code(sdpa_adapter, sample, frames):
    from mapflow.analysis import clean_run

    ctx = _context(sdpa_adapter, sample, frames)
    letter = ctx.prompt.true_letter  # "C"
    gt = ctx.answer_token_id()
    tok = sdpa_adapter.tokenizer
    variants = {t for t in (tok.convert_tokens_to_ids(letter.lower()), tok.convert_tokens_to_ids("▁" + letter))
                if t is not None and t != tok.unk_token_id and t != gt}
    assert variants, "the tiny tokenizer needs a second spelling of the letter"
    for variant in variants:
        assert tok.decode([variant]).lower() == letter.lower()
        clean = clean_run(ctx, _logits_for(sdpa_adapter, variant))
        assert clean.correct and clean.correct_text and not clean.correct_token
        by_token = clean_run(_context(sdpa_adapter, sample, frames, options={"correct_by": "token"}),
                             _logits_for(sdpa_adapter, variant))
        assert not by_token.correct
    wrong = clean_run(ctx, _logits_for(sdpa_adapter, ctx.adapter.continuation_token_id("(", "A")))
    assert not wrong.correct and not wrong.correct_text


def test_stores_keep_both_rules_and_count_their_disagreements(sdpa_adapter, sample, frames):
    import xarray as xr

    from mapflow.errors import MapflowError
    from mapflow.metrics import correctness_disagreements
    from studies import accuracy

    ds = accuracy.run(_context(sdpa_adapter, sample, frames))
    assert {"correct", "correct_text", "correct_token"} <= set(ds.data_vars)
    stacked = xr.Dataset({"correct_text": ("sample", [True, True, False, False]),
                          "correct_token": ("sample", [True, False, True, False])})
    assert correctness_disagreements(stacked) == 2
    with pytest.raises(MapflowError, match="correct_text"):
        correctness_disagreements(xr.Dataset({"correct": ("sample", [True])}))


# ---- logit lens: the sample set and the released code's bins -------------------------------------------------------

def _lens_store(correct):
    import xarray as xr

    words = np.array([[["cup", "up"], ["cup", ""]], [["", "up"], ["up", "up"]], [["cup", "cup"], ["", ""]]],
                     dtype=object)  # (layer, sample, video_token)
    kinds = np.where(words == "cup", "spatial", np.where(words == "up", "temporal", "")).astype(object)
    ds = xr.Dataset({"keyword": (("layer", "sample", "video_token"), words),
                     "keyword_kind": (("layer", "sample", "video_token"), kinds)})
    return ds if correct is None else ds.assign(correct=("sample", np.asarray(correct)))


def test_keyword_frequency_applies_the_sample_filter_or_refuses():
    from mapflow import tables
    from mapflow.errors import MapflowError

    only_first = tables.keyword_frequency(_lens_store([True, False]), "temporal", interval=2, min_hits=1)
    assert only_first.loc["up", "hits"] == 2  # sample 0: "up" in layers 0 and 1; sample 1's two hits are dropped
    everything = tables.keyword_frequency(_lens_store([True, False]), "temporal", interval=2, min_hits=1,
                                          samples="all")
    assert everything.loc["up", "hits"] == 4
    wrong = tables.keyword_frequency(_lens_store([True, False]), "temporal", interval=2, min_hits=1, samples="wrong")
    assert wrong.loc["up", "hits"] == 2
    with pytest.raises(MapflowError, match="correct"):
        tables.keyword_frequency(_lens_store(None), "temporal", interval=2, min_hits=1, samples="correct")
    with pytest.raises(MapflowError, match="correct"):  # the default is the paper's correct set
        tables.keyword_frequency(_lens_store(None), "temporal", interval=2, min_hits=1)
    recorded = _lens_store(None)
    recorded.attrs["provenance"] = {"config": {"samples": "all"}}  # a run made with --samples all
    assert tables.keyword_frequency(recorded, "temporal", interval=2, min_hits=1).loc["up", "hits"] == 4


def test_keyword_frequency_offers_the_released_overlapping_bins():
    from mapflow import tables

    ds = _lens_store([True, True])
    paper = tables.keyword_frequency(ds, "spatial", interval=2, min_hits=1)
    released = tables.keyword_frequency(ds, "spatial", interval=2, min_hits=1, bins="released_code")
    # "cup": layer 0 twice, layer 2 twice. Disjoint: bin 1-2 = 2, bin 3-3 = 2. Released: bin 1-2 sums layers 0..2 = 4
    assert paper.loc["cup", "1-2"] == pytest.approx(0.5)
    assert released.loc["cup", "1-2"] == pytest.approx(4 / 6) and released.loc["cup", "3-3"] == pytest.approx(2 / 6)
    assert tables.keyword_frequency(ds, "spatial", interval=2, min_hits=100).empty  # the released threshold


def test_logit_lens_study_stores_correctness_and_prediction(sdpa_adapter, sample, frames):
    from mapflow.analysis import clean_run
    from studies import logit_lens

    ctx = _context(sdpa_adapter, sample, frames)
    ds = logit_lens.run(ctx)
    clean = clean_run(ctx)
    assert int(ds.pred_base) == clean.pred and bool(ds.correct) == clean.correct
    assert {"correct_text", "correct_token", "included"} <= set(ds.data_vars)


# ---- README and code agree (item 6) --------------------------------------------------------------------------------

def _readme():
    from pathlib import Path

    return (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_states_each_studys_default_sample_set():
    import importlib
    import pkgutil
    import re

    import studies

    readme = _readme()
    table = readme[readme.index("### Sample sets per study"):]
    rows = {}
    lines = table.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|")) + 2  # past the header and its rule
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        for name in re.findall(r"`(\w+)`", cells[0]):
            rows[name] = cells[1].strip("`")
    for info in pkgutil.iter_modules(studies.__path__):
        module = importlib.import_module(f"studies.{info.name}")
        if not hasattr(module, "run"):
            continue
        assert info.name in rows, f"README's sample-set table does not list {info.name}"
        if rows[info.name].startswith("("):
            continue  # studies without a knockout filter
        assert rows[info.name] == getattr(module, "DEFAULT_SAMPLES", "correct"), info.name


def test_docs_name_the_right_section_and_the_keyword_comparison():
    import studies.into_true_option as into_true_option
    import studies.question_options_to_last as question_options_to_last
    from mapflow import generation

    assert "§3.3, Fig. 6" in question_options_to_last.__doc__ and "§3.3, Fig. 7" in into_true_option.__doc__
    assert "attend\nfreely" not in generation.__doc__ and "last prompt row" in generation.__doc__
    assert "lower-cased and stripped" in _readme()


def test_generated_tokens_inherit_the_last_prompt_rows_cuts():
    from mapflow.generation import pad_blocked

    blocked = torch.zeros(4, 4, dtype=torch.bool)
    blocked[3, :2] = True  # "video -> last": the last prompt row may not read positions 0 and 1
    blocked[2, 0] = True
    grown = pad_blocked(blocked, 6)
    assert grown[:4, :4].equal(blocked)
    assert grown[4, :4].equal(blocked[3]) and grown[5, :4].equal(blocked[3])  # released: copy of the last row
    assert not grown[:, 4:].any()  # generated keys stay readable
    assert not pad_blocked(blocked, 6, "free")[4:].any()


def test_greedy_generation_under_a_flow_into_last_uses_the_inherited_rows(sdpa_adapter, sample, frames, monkeypatch):
    from mapflow import generation
    from mapflow.flows import Flow

    ctx = _context(sdpa_adapter, sample, frames)
    blocked = torch.from_numpy(Flow.parse("video->last").block_matrix(ctx.layout))
    seen = []
    real = generation.run_naive

    def spy(adapter, prepared, config=None):
        seen.append(config.blocked.clone())
        return real(adapter, prepared, config)

    monkeypatch.setattr(generation, "run_naive", spy)
    generation.greedy_generate(sdpa_adapter, ctx.prepared, max_new_tokens=3, blocked=blocked, layers=(0, 1))
    n = ctx.layout.seq_len
    video = ctx.layout.positions("video")
    grown = [m for m in seen if m.shape[0] > n]
    assert grown, "generation stopped before a second step"
    for mask in grown:
        assert mask[n:, video].all()  # generated rows may not read the video either


def test_table_e_layers_come_from_action_antonym_when_present(monkeypatch):
    import xarray as xr

    import studies.effective_pathway as effective_pathway

    layers, flows = 10, ["cross_frame", "video->question", "question->last"]
    values = np.zeros((4, len(flows), layers))
    values[:2, :, 0:5] = -20.0  # Action Antonym: strong drops in L1-5
    values[2:, :, 5:10] = -60.0  # another task: stronger drops in L6-10, which pooling would pick too
    store = xr.Dataset({"rel_change": (("sample", "flow", "layer"), values)},
                       coords={"flow": flows, "layer": np.arange(layers),
                               "task": ("sample", ["action_antonym"] * 2 + ["object_count"] * 2)})
    monkeypatch.setattr("mapflow.results.open_dataset", lambda path: store)
    effective_pathway._derived.cache_clear()
    antonym = effective_pathway._derived("s", None, 5, -5.0)
    assert antonym.cross_frame == tuple(range(5))
    pooled = effective_pathway._derived("s", "all", 5, -5.0)
    assert pooled.cross_frame == tuple(range(10))
    assert effective_pathway._derived("s", "object_count", 5, -5.0).cross_frame == tuple(range(5, 10))

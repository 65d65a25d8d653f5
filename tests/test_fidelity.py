"""Fidelity to the paper's released code (issue 14): each test fails on the behaviour the audit found."""

import numpy as np
import pytest
import torch

from mapflow.data.sample import Sample

# ---- verb anchors (appendix C.2) -------------------------------------------------------------------------------


def test_anchor_at_the_third_generated_token_keeps_one_response_token():
    from mapflow.studies.verb_anchors import response_span

    # anchor index 2: the input ends at generated token 1 (the last); token 0 is the only earlier response token.
    # The released code's end = max(1, len - num_open) keeps it; without the floor the span was empty (NaN sample)
    assert response_span(100, anchor=2, previous_anchor=None, num_open=1) == [100]
    assert response_span(100, anchor=1, previous_anchor=None, num_open=1) == []  # no earlier response token at all
    assert response_span(100, anchor=5, previous_anchor=None, num_open=1) == [100, 101, 102]


def test_verb_anchor_reference_response_is_256_tokens_by_default(monkeypatch):
    import mapflow.studies.verb_anchors as verb_anchors

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
    from mapflow.inputs.prompts import VCGBENCH_FREE_FORM, build_prompt, prompt_text

    sample = Sample(
        "temporal_qa/0", "temporal_qa", "v.mp4", "What happens first?", (), -1, reference_answer="A man opens a door."
    )
    text = prompt_text(build_prompt(sample, VCGBENCH_FREE_FORM).segments)
    # released: "{SYSTEM} USER: <image>\n USER: {q} ASSISTANT:" with SYSTEM ending "...based on the provided video."
    assert "based on the provided video. USER: <video>\n USER: What happens first? ASSISTANT:" in text


# ---- correctness as the released code compares it ----------------------------------------------------------------


def _context(adapter, sample, frames, **config):
    from mapflow.analysis.context import StudyConfig, StudyContext
    from mapflow.inputs.prompts import LLAVA_MCQA, build_prompt

    prompt = build_prompt(sample, LLAVA_MCQA)
    prepared = adapter.prepare(
        frames, prompt.segments, option_letters=prompt.option_letters, true_letter=prompt.true_letter
    )
    return StudyContext(
        adapter=adapter, sample=sample, prepared=prepared, config=StudyConfig(**config), prompt=prompt, frames=frames
    )


def _logits_for(adapter, token: int) -> torch.Tensor:
    logits = torch.zeros(adapter.hf_model.get_output_embeddings().weight.shape[0])
    logits[token] = 10.0
    return logits


def test_a_lower_case_or_spaced_letter_is_correct_as_in_the_released_code(sdpa_adapter, sample, frames):

    ctx = _context(sdpa_adapter, sample, frames)
    letter = ctx.prompt.true_letter  # "C"
    gt = ctx.answer_token_id()
    tok = sdpa_adapter.tokenizer
    variants = {
        t
        for t in (tok.convert_tokens_to_ids(letter.lower()), tok.convert_tokens_to_ids("▁" + letter))
        if t is not None and t != tok.unk_token_id and t != gt
    }
    assert variants, "the tiny tokenizer needs a second spelling of the letter"
    for variant in variants:
        assert tok.decode([variant]).lower() == letter.lower()
        clean = ctx.clean(_logits_for(sdpa_adapter, variant))
        assert clean.correct and clean.correct_text and not clean.correct_token
        by_token = _context(sdpa_adapter, sample, frames, options={"correct_by": "token"}).clean(
            _logits_for(sdpa_adapter, variant)
        )
        assert not by_token.correct
    wrong = ctx.clean(_logits_for(sdpa_adapter, ctx.adapter.continuation_token_id("(", "A")))
    assert not wrong.correct and not wrong.correct_text


def test_stores_keep_both_rules_and_count_their_disagreements(sdpa_adapter, sample, frames):
    import xarray as xr

    from mapflow.errors import MapflowError
    from mapflow.results.metrics import correctness_disagreements
    from mapflow.studies import accuracy

    ds = accuracy.run(_context(sdpa_adapter, sample, frames))
    assert {"correct", "correct_text", "correct_token"} <= set(ds.data_vars)
    stacked = xr.Dataset(
        {
            "correct_text": ("sample", [True, True, False, False]),
            "correct_token": ("sample", [True, False, True, False]),
        }
    )
    assert correctness_disagreements(stacked) == 2
    with pytest.raises(MapflowError, match="correct_text"):
        correctness_disagreements(xr.Dataset({"correct": ("sample", [True])}))


# ---- logit lens: the sample set and the released code's bins -------------------------------------------------------


def _lens_store(correct):
    import xarray as xr

    words = np.array(
        [[["cup", "up"], ["cup", ""]], [["", "up"], ["up", "up"]], [["cup", "cup"], ["", ""]]], dtype=object
    )  # (layer, sample, video_token)
    kinds = np.where(words == "cup", "spatial", np.where(words == "up", "temporal", "")).astype(object)
    ds = xr.Dataset(
        {
            "keyword": (("layer", "sample", "video_token"), words),
            "keyword_kind": (("layer", "sample", "video_token"), kinds),
        }
    )
    return ds if correct is None else ds.assign(correct=("sample", np.asarray(correct)))


def test_keyword_frequency_applies_the_sample_filter_or_refuses():
    from mapflow.errors import MapflowError
    from mapflow.viz import tables

    only_first = tables.keyword_frequency(_lens_store([True, False]), "temporal", interval=2, min_hits=1)
    assert only_first.loc["up", "hits"] == 2  # sample 0: "up" in layers 0 and 1; sample 1's two hits are dropped
    everything = tables.keyword_frequency(_lens_store([True, False]), "temporal", interval=2, min_hits=1, samples="all")
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
    from mapflow.viz import tables

    ds = _lens_store([True, True])
    paper = tables.keyword_frequency(ds, "spatial", interval=2, min_hits=1)
    released = tables.keyword_frequency(ds, "spatial", interval=2, min_hits=1, bins="released_code")
    # "cup": layer 0 twice, layer 2 twice. Disjoint: bin 1-2 = 2, bin 3-3 = 2. Released: bin 1-2 sums layers 0..2 = 4
    assert paper.loc["cup", "1-2"] == pytest.approx(0.5)
    assert released.loc["cup", "1-2"] == pytest.approx(4 / 6) and released.loc["cup", "3-3"] == pytest.approx(2 / 6)
    assert tables.keyword_frequency(ds, "spatial", interval=2, min_hits=100).empty  # the released threshold


def test_logit_lens_study_stores_correctness_and_prediction(sdpa_adapter, sample, frames):
    from mapflow.studies import logit_lens

    ctx = _context(sdpa_adapter, sample, frames)
    ds = logit_lens.run(ctx)
    clean = ctx.clean()
    assert int(ds.pred_base) == clean.pred and bool(ds.correct) == clean.correct
    assert {"correct_text", "correct_token", "included"} <= set(ds.data_vars)


# ---- docs and code agree (item 6) ----------------------------------------------------------------------------------


def _doc_page(name: str) -> str:
    """A page of the documentation site: "concepts.md" holds the sample-set table ("Sample sets per study"),
    "paper/differences.md" the paper / released code / mapflow table."""
    from pathlib import Path

    return (Path(__file__).resolve().parents[1] / "docs" / name).read_text()


def test_docs_state_each_studys_default_sample_set():
    import importlib
    import pkgutil
    import re

    import mapflow.studies as studies
    from mapflow.analysis.declaration import declaration_of

    page = _doc_page("concepts.md")
    table = page[page.index("## Sample sets per study") :]
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
        module = importlib.import_module(f"mapflow.studies.{info.name}")
        if not hasattr(module, "run"):
            continue
        assert info.name in rows, f"docs/concepts.md's sample-set table does not list {info.name}"
        if rows[info.name].startswith("("):
            continue  # studies without a knockout filter
        assert rows[info.name] == declaration_of(module).samples, info.name


def test_docs_name_the_right_section_and_the_keyword_comparison():
    import mapflow.studies.into_true_option as into_true_option
    import mapflow.studies.question_options_to_last as question_options_to_last
    from mapflow.readouts import generation

    assert "§3.3, Fig. 6" in question_options_to_last.__doc__ and "§3.3, Fig. 7" in into_true_option.__doc__
    assert "attend\nfreely" not in generation.__doc__ and "last prompt row" in generation.__doc__
    assert "lower-cased and stripped" in _doc_page("paper/differences.md")


def test_generated_tokens_inherit_the_last_prompt_rows_cuts():
    from mapflow.readouts.generation import pad_blocked

    blocked = torch.zeros(4, 4, dtype=torch.bool)
    blocked[3, :2] = True  # "video -> last": the last prompt row may not read positions 0 and 1
    blocked[2, 0] = True
    grown = pad_blocked(blocked, 6)
    assert grown[:4, :4].equal(blocked)
    assert grown[4, :4].equal(blocked[3]) and grown[5, :4].equal(blocked[3])  # released: copy of the last row
    assert not grown[:, 4:].any()  # generated keys stay readable
    assert not pad_blocked(blocked, 6, "free")[4:].any()


def test_greedy_generation_under_a_flow_into_last_uses_the_inherited_rows(sdpa_adapter, sample, frames, monkeypatch):
    from mapflow.knockout.flows import Flow
    from mapflow.readouts import generation

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

    import mapflow.studies.effective_pathway as effective_pathway

    layers, flows = 10, ["cross_frame", "video->question", "question->last"]
    values = np.zeros((4, len(flows), layers))
    values[:2, :, 0:5] = -20.0  # Action Antonym: strong drops in L1-5
    values[2:, :, 5:10] = -60.0  # another task: stronger drops in L6-10, which pooling would pick too
    store = xr.Dataset(
        {"rel_change": (("sample", "flow", "layer"), values)},
        coords={
            "flow": flows,
            "layer": np.arange(layers),
            "task": ("sample", ["action_antonym"] * 2 + ["object_count"] * 2),
        },
    )
    monkeypatch.setattr("mapflow.results.store.open_dataset", lambda path: store)
    effective_pathway._derived.cache_clear()
    antonym = effective_pathway._derived("s", None, 5, -5.0)
    assert antonym.cross_frame == tuple(range(5))
    pooled = effective_pathway._derived("s", "all", 5, -5.0)
    assert pooled.cross_frame == tuple(range(10))
    assert effective_pathway._derived("s", "object_count", 5, -5.0).cross_frame == tuple(range(5, 10))


# ---- VideoLLaMA3 as the released code runs it ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def videollama3(tmp_path_factory):
    from mapflow.models import load_adapter
    from mapflow.testing.tiny_families import build_tiny_family

    root = tmp_path_factory.mktemp("vl3")
    return load_adapter(
        build_tiny_family("videollama3", root / "vl3", seed=2, num_layers=3), attn_implementation="sdpa"
    )


def _vl3_prepare(adapter, sample, frames, timestamps=None):
    from mapflow.inputs.prompts import build_prompt

    prompt = build_prompt(sample, adapter.prompt_template)
    return adapter.prepare(
        frames,
        prompt.segments,
        option_letters=prompt.option_letters,
        true_letter=prompt.true_letter,
        timestamps=timestamps,
    )


def _hidden_under(adapter, prepared, blocked):
    """Every position's last hidden state from the plain HF model, ``blocked`` cut in every layer (no nnsight)."""
    n = prepared.layout.seq_len
    mask = (torch.ones(n, n, dtype=torch.bool).tril() & ~torch.as_tensor(blocked))[None, None]
    handles = [
        layer.register_forward_pre_hook(
            lambda module, args, kwargs: (args, {**kwargs, "attention_mask": mask}), with_kwargs=True
        )
        for layer in adapter.hf_model.model.language_model.layers
    ]
    try:
        with torch.no_grad():
            return adapter.hf_model(**prepared.inputs, output_hidden_states=True).hidden_states[-1][0].double()
    finally:
        for h in handles:
            h.remove()


def test_videollama3_frame_runs_are_label_tokens_and_separator(videollama3, sample):
    from mapflow.knockout.flows import Flow

    frames = np.random.default_rng(0).integers(0, 256, (4, 56, 84, 3), dtype=np.uint8)
    prepared = _vl3_prepare(videollama3, sample, frames)
    layout = prepared.layout
    ids = prepared.inputs["input_ids"][0]
    runs = [videollama3.tokenizer.decode(ids[r.positions()]) for r in layout.runs]
    pad = videollama3.processor.video_token
    assert runs[0] == "Time 0.0s:" + pad * len(layout.frames[0])
    assert all(run.startswith(f",Time {i}.0s:") for i, run in enumerate(runs[1:], start=1))
    assert np.array_equal(np.concatenate([r.positions() for r in layout.runs]), layout.positions("video_block"))
    blocked = Flow.parse("cross_frame").block_matrix(layout)
    for i, run in enumerate(layout.runs):
        earlier = [p for r in layout.runs[:i] for p in r.positions()]
        if earlier:  # every position of run i (separator, label, tokens) loses every earlier run's position
            assert blocked[np.ix_(run.positions(), earlier)].all()
        within = run.positions()
        assert not blocked[np.ix_(within, within)].any()  # within a run attention stays
    label_1 = np.setdiff1d(layout.runs[1].positions(), layout.frames[1].positions())
    assert blocked[np.ix_(label_1, layout.frames[0].positions())].all()  # the audit's case: was all False
    tokens_only = Flow.parse("cross_frame_tokens").block_matrix(layout)
    assert not tokens_only[np.ix_(label_1, layout.frames[0].positions())].any()


def test_videollama3_no_run_reads_an_earlier_run(videollama3, sample):
    """Change only frame 0's timestamp label: under cross_frame in every layer no later run's state moves."""
    from mapflow.knockout.flows import Flow

    frames = np.random.default_rng(1).integers(0, 256, (3, 56, 56, 3), dtype=np.uint8)
    a = _vl3_prepare(videollama3, sample, frames, timestamps=[0.5, 1.0, 1.5])
    b = _vl3_prepare(videollama3, sample, frames, timestamps=[0.7, 1.0, 1.5])
    ids_a, ids_b = a.inputs["input_ids"][0], b.inputs["input_ids"][0]
    assert a.layout.seq_len == b.layout.seq_len
    differ = np.flatnonzero((ids_a != ids_b).numpy())
    assert differ.size and set(differ.tolist()) <= set(a.layout.runs[0].positions().tolist())  # only run 0 changed
    later = np.concatenate([r.positions() for r in a.layout.runs[1:]])
    blocked = Flow.parse("cross_frame").block_matrix(a.layout)
    cut_a, cut_b = _hidden_under(videollama3, a, blocked), _hidden_under(videollama3, b, blocked)
    # the same float ops on the same inputs: only a read of run 0 could make these differ
    assert torch.equal(cut_a[later], cut_b[later])
    nothing = np.zeros_like(blocked)
    free_a, free_b = _hidden_under(videollama3, a, nothing), _hidden_under(videollama3, b, nothing)
    assert (free_a[later] - free_b[later]).abs().max() > 1e-4  # without the cut the label change reaches them
    tokens_only = Flow.parse("cross_frame_tokens").block_matrix(a.layout)
    leak_a, leak_b = _hidden_under(videollama3, a, tokens_only), _hidden_under(videollama3, b, tokens_only)
    assert (leak_a[later] - leak_b[later]).abs().max() > 1e-4  # the old cut (tokens only) leaks


def test_videollama3_runs_without_compression_with_the_144_token_budget(videollama3, sample):
    frames = np.random.default_rng(0).integers(0, 256, (8, 448, 672, 3), dtype=np.uint8)
    frames[1] = frames[0]  # compression would drop most of this frame's tokens
    video = videollama3.processor.video_processor
    saved = video.use_token_compression
    video.use_token_compression = True
    try:
        layout = _vl3_prepare(videollama3, sample, frames).layout
    finally:
        video.use_token_compression = saved
    sizes = [len(f) for f in layout.frames]
    assert len(set(sizes)) == 1 and layout.video_grid is not None  # nothing dropped
    _, h, w = layout.video_grid
    assert h * w <= 144 and h * w > 100 and w > h  # the budget, aspect ratio kept (2:3)


def test_videollama3_prompt_and_timestamps_are_the_released_ones(videollama3, sample):
    frames = np.random.default_rng(0).integers(0, 256, (2, 56, 56, 3), dtype=np.uint8)
    prepared = _vl3_prepare(videollama3, sample, frames, timestamps=[1.0, 4.25])
    expanded = videollama3.tokenizer.decode(prepared.inputs["input_ids"][0])
    assert "Best option" not in prepared.text
    assert prepared.text.endswith("only give the best option.<|im_end|>\n<|im_start|>assistant\n")
    assert "\nQuestion: " in prepared.text and "\n\nQuestion: " not in prepared.text
    assert "Time 1.0s:" in expanded and "Time 4.2s:" in expanded


def test_runner_passes_the_decoded_frame_times(videollama3, tiny_benchmark, monkeypatch):
    from mapflow.analysis.context import StudyConfig
    from mapflow.analysis.runner import measure_sample
    from mapflow.data import load_tvbench
    from mapflow.data.video import read_frames
    from mapflow.studies import accuracy

    sample = load_tvbench(tiny_benchmark, tasks=["moving_direction"], limit=1)[0]
    config = StudyConfig(
        samples="all", num_frames=4, frame_rule="linspace", prompt_template=videollama3.prompt_template.name
    )
    seen = {}
    real = type(videollama3).prepare

    def spy(self, frames, segments, **kwargs):
        seen.update(kwargs)
        return real(self, frames, segments, **kwargs)

    monkeypatch.setattr(type(videollama3), "prepare", spy)
    measure_sample(accuracy, videollama3, sample, config, "tiny")
    video = read_frames(sample, num_frames=4, rule="linspace")
    np.testing.assert_allclose(seen["timestamps"], video.indices / video.fps)
    assert video.fps != 1.0

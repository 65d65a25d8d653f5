"""One suite every model family passes on a tiny random checkpoint built through its own classes and processor.

Spans decode to their text, frame units partition the video span, an empty knockout is bit-exact, a knockout equals a
hand-written masked attention, the logit lens at the last layer is the model's logits, the fast engine equals the
naive recompute, and a short study runs end to end through the CLI.
"""

import math

import numpy as np
import pytest
import torch
from tolerances import assert_float32_exact

from mapflow.inputs.prompts import CHAT_MCQA, LLAVA_MCQA, PromptSegment, mcqa_segments
from mapflow.knockout.engine import KnockoutConfig, run_knockouts
from mapflow.knockout.flows import Flow, Window
from mapflow.knockout.masks import apply_knockout, knockout_attention_mask
from mapflow.models import ADAPTERS, load_adapter

FAMILIES = [
    "llava_next_video",
    "llava_onevision",
    "qwen2_5_vl",
    "qwen3_vl",
    "internvl",
    "videollama3",
    "videollama3_compressed",
]
FLOWS = [
    "video->last",
    "cross_frame",
    "question->last",
    "video->question",
    "video_markup->last",
    "video->question+last->last",
]


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory, tiny_model_dir):
    from mapflow.testing.tiny_families import build_tiny_family

    root = tmp_path_factory.mktemp("families")
    built = {"llava_next_video": tiny_model_dir}

    def get(family):
        if family not in built:
            built[family] = build_tiny_family(family, root / family, seed=2, num_layers=4)
        return built[family]

    return get


@pytest.fixture(scope="session")
def loaded(family_dirs):
    cache = {}

    def get(family, attn="sdpa", dtype="float32"):
        if (family, attn, dtype) not in cache:
            cache[family, attn, dtype] = load_adapter(family_dirs(family), attn_implementation=attn, dtype=dtype)
        return cache[family, attn, dtype]

    return get


@pytest.fixture(scope="session")
def clip():
    """Four frames; the second repeats the first, so VideoLLaMA3's token compression keeps fewer of its tokens."""
    frames = np.random.default_rng(0).integers(0, 256, (4, 40, 48, 3), dtype=np.uint8)
    frames[1] = frames[0]
    return frames


def prepare(adapter, sample, clip):
    template = adapter.prompt_template or LLAVA_MCQA
    return adapter.prepare(
        clip, mcqa_segments(sample, template), option_letters=sample.option_letters, true_letter=sample.answer_letter
    )


def decode(adapter, prepared, name):
    ids = prepared.inputs["input_ids"][0].cpu().numpy()
    return adapter.tokenizer.decode(ids[prepared.layout.positions(name)])


@pytest.mark.parametrize("family", FAMILIES)
def test_spans_decode_to_their_text(family, loaded, sample, clip):
    adapter = loaded(family)
    prepared = prepare(adapter, sample, clip)
    layout = prepared.layout
    for piece in prepared.segments:  # a space at a border is read with the next word's token
        if piece.name != "video" and piece.text:
            assert decode(adapter, prepared, piece.name).strip() == piece.text.strip(), piece.name
    assert decode(adapter, prepared, "true_option").strip() == f"(C) {sample.candidates[2]}"
    assert decode(adapter, prepared, "non_option_question").strip() == f"Question: {sample.question}"
    template = adapter.prompt_template or LLAVA_MCQA
    assert decode(adapter, prepared, "answer_prompt").endswith(template.answer_prompt)  # VideoLLaMA3's is empty
    ids = prepared.inputs["input_ids"][0].cpu().numpy()
    assert set(ids[layout.positions("video")].tolist()) == {adapter.video_token_id}
    # every position belongs to exactly one piece (the video piece as its block), except a tokenizer's BOS
    owners = np.concatenate(
        [layout.positions("video_block" if p.name == "video" else p.name) for p in prepared.segments]
    )
    assert len(owners) == len(set(owners.tolist()))
    assert set(range(layout.seq_len)) - set(owners.tolist()) <= {0}


@pytest.mark.parametrize("family", FAMILIES)
def test_frame_units_partition_the_video_span(family, loaded, sample, clip):
    adapter = loaded(family)
    layout = prepare(adapter, sample, clip).layout
    frames = layout.frames
    assert np.array_equal(np.concatenate([f.positions() for f in frames]), layout.positions("video"))
    assert all(len(f.ranges) == 1 for f in frames)  # each unit is one contiguous run
    units = math.ceil(len(clip) / 2) if adapter.frame_unit.startswith("temporal group") else len(clip)
    assert len(frames) == units
    markup = layout.positions("video_markup")
    assert np.array_equal(np.union1d(layout.positions("video"), markup), layout.positions("video_block"))
    if family == "videollama3_compressed":
        sizes = [len(f) for f in frames]
        assert layout.video_grid is None and sizes[1] < sizes[0] == sizes[2]  # the repeated frame lost tokens
    else:
        t, h, w = layout.video_grid
        assert t == units and all(len(f) == h * w for f in frames)
    if family in ("internvl", "videollama3", "qwen3_vl"):  # runs separated by frame labels / timestamps
        assert all(b.start > a.stop for a, b in zip(frames, frames[1:]))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
def test_empty_knockout_is_bit_exact(family, attn, loaded, sample, clip):
    adapter = loaded(family, attn)
    prepared = prepare(adapter, sample, clip)
    n = prepared.layout.seq_len
    with torch.no_grad():
        with adapter.trace(prepared):
            clean = adapter.lm_head.output[0].save()
        with adapter.trace(prepared):
            apply_knockout(adapter.layers, torch.zeros(n, n, dtype=torch.bool), range(adapter.num_layers))
            empty = adapter.lm_head.output[0].save()
        plain = adapter.hf_model(**prepared.inputs).logits[0]
    assert torch.equal(clean, empty) and torch.equal(clean, plain)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMILIES)
def test_knockout_equals_hand_written_masked_attention(family, attn, loaded, sample, clip):
    adapter = loaded(family, attn)
    prepared = prepare(adapter, sample, clip)
    layout = prepared.layout
    blocked = torch.from_numpy(Flow.parse("cross_frame+video->last+question->last").block_matrix(layout))
    probe = 2
    with torch.no_grad(), adapter.trace(prepared):
        for i in (1, 2):
            args, kwargs = adapter.layers[i].inputs
            kwargs = dict(kwargs)
            kwargs["attention_mask"] = knockout_attention_mask(kwargs.get("attention_mask"), blocked)
            adapter.layers[i].inputs = (args, kwargs)
            if i == probe:
                # queries/keys after rotary (and q/k norms), values: the inputs of the attention kernel
                _, query, key, value = adapter.attention(i).source.attention_interface_1.inputs[0][:4]
                query, key, value = query.save(), key.save(), value.save()
                out = adapter.attention(i).output[0].save()
    module = adapter.hf_model.model.language_model.layers[probe].self_attn
    n = layout.seq_len
    allowed = torch.ones(n, n, dtype=torch.bool).tril() & ~blocked
    groups = query.shape[1] // key.shape[1]

    def masked_attention(dtype, allowed):
        k, v = key.to(dtype).repeat_interleave(groups, 1), value.to(dtype).repeat_interleave(groups, 1)
        scores = (query.to(dtype) @ k.transpose(-1, -2) * module.scaling).masked_fill(~allowed, float("-inf"))
        mixed = (scores.softmax(-1) @ v).transpose(1, 2).reshape(1, n, -1)
        bias = None if module.o_proj.bias is None else module.o_proj.bias.to(dtype)
        return torch.nn.functional.linear(mixed, module.o_proj.weight.to(dtype), bias)

    assert_float32_exact(
        out, masked_attention(torch.float32, allowed), masked_attention(torch.float64, allowed), family
    )
    # and the knockout really cut something at the probe layer
    clean = masked_attention(torch.float64, torch.ones(n, n, dtype=torch.bool).tril())
    assert (out.double() - clean).abs().max() > 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_logit_lens_at_the_last_layer_is_the_models_logits(family, loaded, sample, clip):
    adapter = loaded(family)
    prepared = prepare(adapter, sample, clip)
    with torch.no_grad(), adapter.trace(prepared):
        resid = [adapter.layers[i].output[0, -1] for i in range(adapter.num_layers)]
        lens = adapter.logit_lens(torch.stack(resid)).save()
        logits = adapter.lm_head.output[0, -1].save()
    assert torch.equal(lens[-1], logits)
    assert not torch.equal(lens[0], logits)


@pytest.mark.parametrize("family", FAMILIES)
def test_engine_equals_naive(family, loaded, sample, clip):
    adapter = loaded(family)
    prepared = prepare(adapter, sample, clip)
    configs = [
        KnockoutConfig(
            torch.from_numpy(Flow.parse(f).block_matrix(prepared.layout)),
            Window("center", 3).layers(layer, adapter.num_layers),
        )
        for f in FLOWS
        if f != "video_markup->last" or prepared.layout["video_markup"].ranges
        for layer in range(adapter.num_layers)
    ]
    naive = run_knockouts(adapter, prepared, configs, plan="naive")
    reference = loaded(family, "eager", "float64")
    exact = run_knockouts(reference, prepare(reference, sample, clip), configs, plan="naive")
    for max_rows in (None, 2):
        fast = run_knockouts(adapter, prepared, configs, plan="auto", max_rows=max_rows)
        assert_float32_exact(fast, naive, exact, f"{family}, max_rows={max_rows}")
    assert not torch.equal(naive[0], naive[-1])


@pytest.mark.parametrize("family", FAMILIES)
def test_head_knockout_and_screen_in_every_family(family, loaded, sample, clip):
    """Head-restricted knockouts (grouped kv heads) through the fast engine equal the naive per-head masks; the
    screen's recorded forward is the clean run, and its local change is the model's own knocked-out attention."""
    from mapflow.knockout.engine import run_naive
    from mapflow.knockout.masks import apply_layer_masks, head_blocked
    from mapflow.knockout.screen import local_change, screen_forward

    adapter = loaded(family)
    prepared = prepare(adapter, sample, clip)
    cross, last = (
        torch.from_numpy(Flow.parse(f).block_matrix(prepared.layout)) for f in ("cross_frame", "video->last")
    )
    configs = [
        KnockoutConfig(cross, (0, 1), (0,)),
        KnockoutConfig(last, (1,), (1, adapter.num_heads - 1)),
        KnockoutConfig(cross, (1,)),
    ]
    naive = run_knockouts(adapter, prepared, configs, plan="naive")
    assert (naive - run_knockouts(adapter, prepared, configs)).abs().max() <= 1e-5
    fwd = screen_forward(adapter, prepared)
    assert (fwd.logits - run_naive(adapter, prepared)).abs().max() <= 1e-5
    outputs = []
    for masks in ({}, {1: head_blocked(cross, (0,), adapter.num_heads)}):
        with torch.no_grad(), adapter.trace(prepared):
            apply_layer_masks(adapter.layers, masks)
            out = adapter.attention_call(1).output[0].save()
        outputs.append(out.detach()[0])
    rows, change = local_change(fwd, 1, cross, (0,))
    assert (change - (outputs[1] - outputs[0])[rows]).abs().max() <= 1e-5


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_engine_needs_the_clean_rotary_positions(family, loaded, sample, clip, monkeypatch):
    """Without the adapter's hook a forward from embeddings numbers positions as plain text: results go wrong."""
    adapter = loaded(family)
    prepared = prepare(adapter, sample, clip)
    blocked = torch.from_numpy(Flow.parse("cross_frame").block_matrix(prepared.layout))
    configs = [KnockoutConfig(blocked, (1, 2))]
    naive = run_knockouts(adapter, prepared, configs, plan="naive")
    monkeypatch.setattr(type(adapter), "clean_language_model_kwargs", ())
    wrong = run_knockouts(adapter, prepared, configs, plan="auto")
    assert (naive - wrong).abs().max() > 1e-3


@pytest.mark.parametrize("family", FAMILIES[1:6])
def test_short_study_runs_end_to_end(family, family_dirs, tiny_benchmark, tmp_path):
    import xarray as xr

    from mapflow.cli import main

    out = tmp_path / "flow.zarr"
    assert (
        main(
            [
                "run",
                "information_flow",
                "--model",
                str(family_dirs(family)),
                "--data",
                str(tiny_benchmark),
                "--out",
                str(out),
                "--window",
                "3",
                "--samples",
                "all",
                "--limit",
                "1",
                "--tasks",
                "moving_direction",
                "--frames",
                "4",
                "--no-progress",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    ds = xr.open_zarr(out)
    config = ds.attrs["provenance"]["config"]
    paper_own = family == "videollama3"  # the released VideoLLaMA3 prompt and linspace frame sampling
    assert ds.sizes["sample"] == 1
    assert config["prompt_template"] == ("videollama3_mcqa" if paper_own else CHAT_MCQA.name)
    assert config["frame_rule"] == ("linspace" if paper_own else "segment_midpoint")
    assert np.isfinite(ds.rel_change.values).all()


def test_every_family_has_an_adapter_and_a_tiny_builder():
    from mapflow.testing.tiny_families import TINY_BUILDERS

    families = {cls.family for cls in ADAPTERS.values()}
    assert families == {"llava_next_video"} | {f for f in TINY_BUILDERS if f != "videollama3_compressed"}
    assert all(cls.frame_unit and cls.token_layout for cls in ADAPTERS.values())


def test_chat_template_that_changes_the_text_is_refused(loaded, clip):
    from mapflow.errors import LayoutError
    from mapflow.models.chat import render_chat

    adapter = loaded("internvl")
    segments = [PromptSegment("video", "<video>"), PromptSegment("question_text", "  What happens?  ")]
    original = adapter.processor.chat_template
    try:
        adapter.processor.chat_template = original.replace("{{ content['text'] }}", "{{ content['text'] | trim }}")
        with pytest.raises(LayoutError, match="changes the prompt text"):
            render_chat(adapter.processor, segments)
    finally:
        adapter.processor.chat_template = original
    assert "".join(p.text for p in render_chat(adapter.processor, segments)).count("  What happens?  ") == 1


def test_models_command_lists_every_family(capsys):
    from mapflow.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for arch, cls in ADAPTERS.items():
        line = next(line for line in out.splitlines() if arch in line)
        assert cls.family in line and cls.frame_unit in line and cls.token_layout in line


def test_half_precision_placement_through_accelerate(family_dirs, sample, clip):
    """bf16 weights placed by accelerate's device_map: the load-time self-test (bit-exact empty knockout) passes and
    the inputs follow the embedding's dtype and device."""
    adapter = load_adapter(family_dirs("qwen3_vl"), dtype="bf16", device_map="cpu")
    assert adapter.hf_model.dtype == torch.bfloat16
    prepared = prepare(adapter, sample, clip)
    assert prepared.inputs["pixel_values_videos"].dtype == torch.bfloat16
    assert prepared.inputs["input_ids"].device == adapter.input_device

"""Per-model effective-pathway ranges (issue 22, part 5): Table E's preset for each model it lists, picked by the loaded
model's shape; a model the table does not list is refused before any sample runs; VideoLLaMA3's released option cuts
the video rules on the whole video block (frame labels included)."""

import importlib
import re
from types import SimpleNamespace

import numpy as np
import pytest

from mapflow.errors import KnockoutConfigError
from mapflow.models.internvl import InternVLAdapter
from mapflow.models.llava_next_video import LlavaNextVideoAdapter
from mapflow.models.qwen_vl import Qwen2_5_VLAdapter
from mapflow.models.videollama3 import VideoLlama3Adapter
from mapflow.readouts.pathways import PathwayLayers, kept_edges, pathway_masks

effective_pathway = importlib.import_module("mapflow.studies.effective_pathway")

# Table E(a) as the paper prints it (1-based, inclusive L-names), with the published language model's
# (num_hidden_layers, hidden_size) of each: Vicuna-7B/13B-v1.5, Phi-3-mini-128k-instruct, Qwen2.5-7B config.json.
TABLE_E = {
    "LLaVA-NeXT-7B-Video-FT": (LlavaNextVideoAdapter, 32, 4096, "L6-15", "L6-20", "L16-25"),
    "LLaVA-NeXT-13B-Video-FT": (LlavaNextVideoAdapter, 40, 5120, "L6-15", "L6-20", "L16-30"),
    "Mini-InternVL-4B-Video-FT": (InternVLAdapter, 32, 3072, "L6-15", "L6-20", "L11-30"),
    "VideoLLaMA3-7B": (VideoLlama3Adapter, 28, 3584, "L1-15", "L6-20", "L21-28"),
}


def paper_layers(name: str) -> tuple[int, ...]:
    """``L6-15`` -> 0-based layers 5..14."""
    first, last = map(int, re.fullmatch(r"L(\d+)-(\d+)", name).groups())
    return tuple(range(first - 1, last))


def shaped(adapter_class, num_layers: int, hidden_size: int):
    """What the range choice reads of a loaded model: its family and its language model's config."""
    return SimpleNamespace(
        family=adapter_class.family,
        num_layers=num_layers,
        text_config=SimpleNamespace(num_hidden_layers=num_layers, hidden_size=hidden_size),
    )


def options(**given):
    return lambda name, default=None: given.get(name, default)


@pytest.mark.parametrize("model", list(TABLE_E))
def test_each_listed_model_gets_its_table_e_ranges(model):
    adapter_class, layers, hidden, cross_frame, video_question, question_last = TABLE_E[model]
    choice = effective_pathway.choose_layers(options(), shaped(adapter_class, layers, hidden))
    assert choice.layers == PathwayLayers(
        paper_layers(cross_frame), paper_layers(video_question), paper_layers(question_last)
    )
    assert model in choice.source and choice.video_span == "video"


@pytest.mark.parametrize(
    "adapter_class,layers,hidden",
    [
        (Qwen2_5_VLAdapter, 28, 3584),  # Qwen2.5-VL-7B: not in Table E (same depth and width as VideoLLaMA3)
        (LlavaNextVideoAdapter, 8, 128),  # the embedded organisms
        (LlavaNextVideoAdapter, 40, 4096),  # a 13B depth at the 7B width: no listed model
    ],
)
def test_a_model_table_e_does_not_list_is_refused_with_both_ways_out(adapter_class, layers, hidden):
    with pytest.raises(KnockoutConfigError) as refused:
        effective_pathway.choose_layers(options(), shaped(adapter_class, layers, hidden))
    message = str(refused.value)
    assert "Table E gives no layer ranges" in message and f"{layers} layers" in message
    assert "--option ranges=" in message and "--option from=" in message


def test_a_named_preset_is_never_scaled_to_another_depth():
    seven_b = shaped(LlavaNextVideoAdapter, 32, 4096)
    picked = effective_pathway.choose_layers(options(preset="llava-13b"), shaped(LlavaNextVideoAdapter, 40, 1))
    assert picked.layers.question_last == paper_layers("L16-30")
    with pytest.raises(KnockoutConfigError, match="40 layers; this model has 32.*never scaled"):
        effective_pathway.choose_layers(options(preset="llava-13b"), seven_b)
    with pytest.raises(KnockoutConfigError, match="outside this model's 0..31.*question_last 32-36"):
        effective_pathway.choose_layers(
            options(ranges="cross_frame=1-2;video_question=1-2;question_last=30-36"), seven_b
        )


def test_the_refusal_comes_before_any_sample_is_measured(tiny_model_dir, tiny_benchmark, tmp_path, capsys):
    """`mapflow run effective_pathway` on an unlisted model stops in the option checks: no store is created."""
    from mapflow.cli import main

    out = tmp_path / "pathway.zarr"
    args = [
        "run",
        "effective_pathway",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(tiny_benchmark),
        "--limit",
        "1",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args) != 0
    assert re.search("Table E gives no layer ranges.*--option ranges=.*--option from=", capsys.readouterr().err)
    assert not out.exists()
    ranges = "cross_frame=0-2;video_question=0-3;question_last=2-4"
    assert main([*args, "--option", f"ranges={ranges}"]) == 0 and out.exists()


def test_videollama3_released_option_cuts_the_frame_labels(tmp_path):
    """``preset=videollama3_released``: Table E's VideoLLaMA3 layers with the whole video block (the ``Time t s:``
    labels and commas) as the video range; the default keeps mapflow's feature-token video span."""
    from conftest import study_context

    from mapflow.models import load_adapter
    from mapflow.testing.tiny_families import build_tiny_family

    shape = shaped(VideoLlama3Adapter, 28, 3584)
    released = effective_pathway.choose_layers(options(preset="videollama3_released"), shape)
    default = effective_pathway.choose_layers(options(), shape)
    assert released.layers == default.layers and (released.video_span, default.video_span) == ("video_block", "video")

    adapter = load_adapter(
        build_tiny_family("videollama3", tmp_path / "vl3", seed=2, num_layers=3), attn_implementation="sdpa"
    )
    from mapflow.data.sample import Sample

    sample = Sample(
        "moving_direction/0000", "moving_direction", "unused.mp4", "Which way does it move?", ("Left.", "Right."), 1
    )
    frames = np.random.default_rng(0).integers(0, 256, (4, 56, 84, 3), dtype=np.uint8)
    ranges = "cross_frame=0-1;video_question=0-2;question_last=1-3"
    results = {}
    for span in ("video", "video_block"):
        ctx = study_context(
            adapter,
            sample,
            frames,
            template=adapter.prompt_template,
            samples="all",
            options={"ranges": ranges, "video_span": span},
        )
        results[span] = (ctx, effective_pathway.run(ctx))
    ctx, ds = results["video_block"]
    layout = ctx.layout
    labels = layout.positions("video_markup")
    assert len(labels) > 0, "the tiny VideoLLaMA3 writes frame labels"
    text = adapter.tokenizer.decode(ctx.prepared.inputs["input_ids"][0, labels])
    assert "Time" in text  # the labels are the `Time t s:` text
    last, question = layout.last, layout.positions("question")
    masks = {
        span: pathway_masks(
            layout, PathwayLayers(tuple(range(0, 1)), tuple(range(0, 2)), tuple(range(1, 3))), 3, video_span=span
        )
        for span in ("video", "video_block")
    }
    for layer in range(3):  # video -> last is cut in every layer: labels too only in the released range
        assert masks["video_block"][layer][last, labels].all() and not masks["video"][layer][last, labels].any()
    # video -> question outside the V->Q layers (layer 2): labels cut in the released range only
    assert masks["video_block"][2][np.ix_(question, labels)].all()
    assert not masks["video"][2][np.ix_(question, labels)].any()
    assert str(ds["video_span"].values) == "video_block"
    assert int(ds.edges_kept.sel(condition="effective")) == kept_edges(masks["video_block"])
    assert int(results["video"][1].edges_kept.sel(condition="effective")) == kept_edges(masks["video"])
    assert kept_edges(masks["video_block"]) < kept_edges(masks["video"])

"""The paper's LLaVA-NeXT-Video-FT checkpoints (PLLaVA layout): the converter plus mapflow's project-then-pool video
path reproduce a re-implementation of PLLaVA's published forward on random weights; the native class alone does not."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from mapflow.inputs.prompts import LLAVA_MCQA, mcqa_segments
from mapflow.models import load_adapter
from mapflow.models.pllava import convert_pllava_checkpoint

POOLING = [4, 4, 4]  # the tiny tower has 8x8 patches: 2x2 spatial pooling as 24x24 -> 12x12 in the paper


@pytest.fixture(scope="module")
def pllava_dirs(tmp_path_factory):
    """A tiny checkpoint written in PLLaVA's layout, and its conversion."""
    from mapflow.testing.tiny import build_tiny_llava_next_video

    root = tmp_path_factory.mktemp("pllava")
    native = build_tiny_llava_next_video(root / "native", seed=3, num_layers=2)
    src = root / "pllava-src"
    src.mkdir()
    # PLLaVA's files use the llava-hf (transformers 4) names: CLIP under vision_tower.vision_model
    weights = {
        ("vision_tower.vision_model." + k[len("vision_tower.") :] if k.startswith("vision_tower.") else k): v
        for k, v in load_file(native / "model.safetensors").items()
    }
    assert {k.split(".")[0] for k in weights} == {
        "vision_tower",
        "multi_modal_projector",
        "language_model",
        "image_newline",
    }
    save_file(weights, src / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((native / "config.json").read_text())
    config.update(architectures=["PllavaForConditionalGeneration"], model_type="pllava", pooling_shape=POOLING)
    (src / "config.json").write_text(json.dumps(config))
    for name in native.iterdir():
        if name.suffix == ".json" and name.name != "config.json":
            (src / name.name).write_bytes(name.read_bytes())
    return native, src, convert_pllava_checkpoint(src, root / "converted")


def reference_pllava_logits(src, input_ids, pixel_values_videos, placeholder_id):
    """PLLaVA's forward as published, written out: CLIP layer, CLS dropped, projector on every patch,
    AdaptiveAvgPool3d to pooling_shape, (t, h, w) order, all video tokens in place of the single placeholder."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    config = json.loads((src / "config.json").read_text())
    weights = load_file(src / "model.safetensors")
    part = lambda prefix: {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}  # noqa: E731
    tower = CLIPVisionModel(CLIPVisionConfig(**config["vision_config"])).eval()
    tower.load_state_dict(part("vision_tower.vision_model."))  # transformers 5 CLIPVisionModel: no vision_model.
    lm = LlamaForCausalLM(LlamaConfig(**config["text_config"])).eval()
    lm.load_state_dict(
        {
            **{"model." + k: v for k, v in part("language_model.model.").items()},
            "lm_head.weight": weights["language_model.lm_head.weight"],
        }
    )
    proj = part("multi_modal_projector.")
    b, t, c, h, w = pixel_values_videos.shape
    hidden = tower(pixel_values_videos.reshape(b * t, c, h, w), output_hidden_states=True).hidden_states
    feats = hidden[config["vision_feature_layer"]][:, 1:]
    feats = torch.nn.functional.linear(feats, proj["linear_1.weight"], proj["linear_1.bias"])
    feats = torch.nn.functional.linear(torch.nn.functional.gelu(feats), proj["linear_2.weight"], proj["linear_2.bias"])
    side = int(feats.shape[1] ** 0.5)
    grid = feats.reshape(b, t, side, side, -1).permute(0, 4, 1, 2, 3)  # b t (h w) d -> b d t h w
    pooled = torch.nn.AdaptiveAvgPool3d(tuple(config["pooling_shape"]))(grid).flatten(2).transpose(1, 2)[0]
    at = int((input_ids == placeholder_id).nonzero()[0])
    embeds = lm.get_input_embeddings()(input_ids)
    merged = torch.cat([embeds[:at], pooled, embeds[at + 1 :]])[None]
    return lm(inputs_embeds=merged).logits[0]


def test_converted_checkpoint_reproduces_the_published_forward(pllava_dirs, sample):
    native, src, converted = pllava_dirs
    adapter = load_adapter(converted)
    frames = np.random.default_rng(1).integers(0, 256, (POOLING[0], 64, 64, 3), dtype=np.uint8)
    prepared = adapter.prepare(
        frames,
        mcqa_segments(sample, LLAVA_MCQA),
        option_letters=sample.option_letters,
        true_letter=sample.answer_letter,
    )
    assert prepared.layout.video_grid == tuple(POOLING)
    with torch.no_grad():
        ours = adapter.hf_model(**prepared.inputs).logits[0]
        video_id = adapter.processor.video_token_id
        ids = prepared.inputs["input_ids"][0]
        first = int((ids == video_id).nonzero()[0])
        single = torch.cat([ids[: first + 1], ids[(ids != video_id).nonzero()[:, 0][first:]]])  # one placeholder
        expected = reference_pllava_logits(src, single, prepared.inputs["pixel_values_videos"], video_id)
        native_logits = load_adapter(native).hf_model(**prepared.inputs).logits[0]
    assert ours.shape == expected.shape
    assert (ours - expected).abs().max() <= 1e-5
    assert (native_logits - expected).abs().max() > 1e-3  # pooling before the projector is another computation


def test_wrong_frame_count_is_refused(pllava_dirs, sample):
    adapter = load_adapter(pllava_dirs[2])
    frames = np.zeros((POOLING[0] + 2, 64, 64, 3), dtype=np.uint8)
    prepared = adapter.prepare(frames[: POOLING[0]], mcqa_segments(sample, LLAVA_MCQA))
    prepared.inputs["pixel_values_videos"] = torch.cat([prepared.inputs["pixel_values_videos"]] * 2, 1)
    with pytest.raises(ValueError, match="pools time"):
        adapter.hf_model(**prepared.inputs)

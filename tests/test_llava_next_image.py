"""The image-LLM baseline of Fig. 2: an image LLaVA-NeXT checkpoint converted for video equals a re-implementation of
PLLaVA's forward with the image model's weights (frames as single crops, projector on every patch, 3-D average
pooling, one <image> placeholder), on random weights."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mapflow.errors import ModelLoadError
from mapflow.inputs.prompts import LLAVA_MCQA, mcqa_segments
from mapflow.models import load_adapter
from mapflow.models.llava_next_image import convert_llava_next_image_checkpoint

POOLING = (4, 4, 4)  # the tiny tower has 8x8 patches: 2x2 spatial pooling as 24x24 -> 12x12 in the paper


@pytest.fixture(scope="module")
def image_dirs(tmp_path_factory):
    """A tiny random image LLaVA-NeXT checkpoint (LlavaNextForConditionalGeneration) and its conversion."""
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    from mapflow.testing.tiny import build_tiny_tokenizer, tiny_llava_next_video_config

    root = tmp_path_factory.mktemp("llava-next-image")
    tokenizer = build_tiny_tokenizer()
    video_config = tiny_llava_next_video_config(
        vocab_size=len(tokenizer),
        video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        num_layers=2,
    )
    config = LlavaNextConfig(
        vision_config=video_config.vision_config,
        text_config=video_config.text_config,
        image_token_id=video_config.image_token_id,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_grid_pinpoints=[[64, 64]],
        tie_word_embeddings=False,
    )
    torch.manual_seed(4)
    src = root / "image"
    LlavaNextForConditionalGeneration(config).eval().save_pretrained(src)
    size, crop = {"shortest_edge": 64}, {"height": 64, "width": 64}
    LlavaNextProcessor(
        image_processor=LlavaNextImageProcessor(size=size, crop_size=crop, image_grid_pinpoints=[[64, 64]]),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
    ).save_pretrained(src)
    return src, convert_llava_next_image_checkpoint(src, root / "converted", pooling_shape=POOLING)


def reference_logits(src, input_ids, pixel_values_videos, placeholder_id):
    """PLLaVA's forward on the image model's weights, written out from the weight file."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    config = json.loads((src / "config.json").read_text())
    weights = load_file(src / "model.safetensors")

    def part(*prefixes):
        for prefix in prefixes:
            found = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
            if found:
                return found
        raise KeyError(prefixes)

    tower = CLIPVisionModel(CLIPVisionConfig(**config["vision_config"])).eval()
    tower.load_state_dict(
        part("vision_tower.vision_model.", "model.vision_tower.vision_model.", "vision_tower.", "model.vision_tower.")
    )
    lm = LlamaForCausalLM(LlamaConfig(**config["text_config"])).eval()
    head = weights.get("language_model.lm_head.weight", weights.get("lm_head.weight"))
    lm.load_state_dict(
        {
            **{"model." + k: v for k, v in part("language_model.model.", "model.language_model.").items()},
            "lm_head.weight": head,
        }
    )
    proj = part("multi_modal_projector.", "model.multi_modal_projector.")
    b, t, c, h, w = pixel_values_videos.shape
    hidden = tower(pixel_values_videos.reshape(b * t, c, h, w), output_hidden_states=True).hidden_states
    feats = hidden[config["vision_feature_layer"]][:, 1:]  # CLS dropped
    feats = torch.nn.functional.linear(feats, proj["linear_1.weight"], proj["linear_1.bias"])
    feats = torch.nn.functional.linear(torch.nn.functional.gelu(feats), proj["linear_2.weight"], proj["linear_2.bias"])
    side = int(feats.shape[1] ** 0.5)
    grid = feats.reshape(b, t, side, side, -1).permute(0, 4, 1, 2, 3)  # b t (h w) d -> b d t h w
    pooled = torch.nn.AdaptiveAvgPool3d(POOLING)(grid).flatten(2).transpose(1, 2)[0]
    at = int((input_ids == placeholder_id).nonzero()[0])
    embeds = lm.get_input_embeddings()(input_ids)
    return lm(inputs_embeds=torch.cat([embeds[:at], pooled, embeds[at + 1 :]])[None]).logits[0]


def test_converted_image_model_is_pllavas_forward(image_dirs, sample):
    src, converted = image_dirs
    adapter = load_adapter(converted)
    assert adapter.processor.video_token == "<image>"
    frames = np.random.default_rng(1).integers(0, 256, (POOLING[0], 80, 96, 3), dtype=np.uint8)
    prepared = adapter.prepare(
        frames,
        mcqa_segments(sample, LLAVA_MCQA),
        option_letters=sample.option_letters,
        true_letter=sample.answer_letter,
    )
    assert prepared.layout.video_grid == POOLING
    assert " USER: <image>\n USER: Question:" in prepared.text  # the paper's prompt, one <image> placeholder
    assert prepared.inputs["pixel_values_videos"].shape[-2:] == (64, 64)  # one centre crop per frame, no AnyRes
    with torch.no_grad():
        ours = adapter.hf_model(**prepared.inputs).logits[0]
        image_id = adapter.processor.image_token_id
        ids = prepared.inputs["input_ids"][0]
        first = int((ids == image_id).nonzero()[0])
        single = torch.cat([ids[: first + 1], ids[(ids != image_id).nonzero()[:, 0][first:]]])
        expected = reference_logits(src, single, prepared.inputs["pixel_values_videos"], image_id)
    assert ours.shape == expected.shape
    # float32 through the same ops in another order: 1e-5 is ~100x the rounding of these few-layer logits
    assert (ours - expected).abs().max() <= 1e-5
    # the image model's own projector is used: swap it for another and the logits move
    with torch.no_grad():
        adapter.hf_model.model.multi_modal_projector.linear_2.bias.add_(0.5)
        moved = adapter.hf_model(**prepared.inputs).logits[0]
        adapter.hf_model.model.multi_modal_projector.linear_2.bias.sub_(0.5)
    assert (moved - expected).abs().max() > 1e-3


def test_converter_refuses_other_checkpoints(image_dirs, tmp_path):
    _, converted = image_dirs
    with pytest.raises(ModelLoadError, match="LlavaNextForConditionalGeneration"):
        convert_llava_next_image_checkpoint(converted, tmp_path / "again")

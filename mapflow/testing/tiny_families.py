"""Tiny random checkpoints of every supported chat video-LLM family, saved in Hugging Face format.

Like `mapflow.testing.tiny` (LLaVA-NeXT-Video): configs shrunk to a few layers and a hidden size of 64, a trained
byte-level BPE tokenizer holding the family's special tokens, and the family's own processor classes with a chat
template, so `from_pretrained` + the adapter exercise the same code paths as a real checkpoint. Qwen2.5-VL, InternVL
and LLaVA-OneVision carry their published chat templates; Qwen3-VL's is the published one without tools and
reasoning, VideoLLaMA3's follows its format (``<|im_start|>user\\n`` video, ``\\n``, text). Weights are random.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .tiny import _CORPUS, train_byte_level_bpe

CHAT_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_CHAT_CORPUS = _CORPUS + [
    "system user assistant Answer with the option's letter from the given choices directly and only give the best "
    "option. You are a helpful assistant. Time s: seconds Frame: Frame1 Frame2 Frame3 Frame4 0.0 0.5 1.0 1.5 2.0",
]

QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)
QWEN3_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' %}<|vision_start|><|video_pad|>"
    "<|vision_end|>{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "{{ '<IMG_CONTEXT>\n' }}{% elif content['type'] == 'video' %}{{ '<video>\n' }}{% elif content['type'] == 'text' "
    "%}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}{{'<|im_end|>\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}"
)
LLAVA_ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{% generation %}"
    "{{ content['text'] }}{% endgeneration %}{% endfor %}{% endif %}{{'<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
VIDEOLLAMA3_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "<|image_pad|>\n{% elif content['type'] == 'video' %}<|video_pad|>\n{% elif content['type'] == 'text' %}"
    "{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_chat_tokenizer(named_tokens: dict[str, str]):
    """A tiny Qwen-style tokenizer (no BOS, ``<|im_end|>`` ends a turn) with the family's named special tokens."""
    from transformers import PreTrainedTokenizerFast

    specials = list(dict.fromkeys(CHAT_SPECIAL_TOKENS + list(named_tokens.values())))
    tokenizer = train_byte_level_bpe(specials, corpus=_CHAT_CORPUS, unk_token=None)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>", extra_special_tokens=named_tokens
    )


def _text_config(tokenizer, num_layers: int, hidden_size: int, **extra) -> dict:
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=pad,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=pad,
        tie_word_embeddings=False,
        initializer_range=0.1,  # larger than real models' 0.02, so a knockout visibly moves the logits
        **extra,
    )


QWEN_VL_TOKENS = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "vision_start_token": "<|vision_start|>",
    "vision_end_token": "<|vision_end|>",
}


def _qwen_vl(version: str, num_layers: int, hidden_size: int):
    import transformers

    qwen3 = version == "3"
    tokenizer = build_chat_tokenizer(QWEN_VL_TOKENS)
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in QWEN_VL_TOKENS.items()}
    patch = 16 if qwen3 else 14
    head_dim = hidden_size // 4
    rope = dict(rope_type="default", rope_theta=10000.0, mrope_section=[2, 3, 3])  # sums to head_dim / 2
    text = _text_config(tokenizer, num_layers, hidden_size, rope_parameters=rope, head_dim=head_dim)
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=hidden_size,
        patch_size=patch,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )
    if qwen3:
        rope["mrope_interleaved"] = True
        vision.update(num_position_embeddings=16, deepstack_visual_indexes=[0, 1])
        config = transformers.Qwen3VLConfig(
            text_config=text,
            vision_config=vision,
            image_token_id=ids["image_token"],
            video_token_id=ids["video_token"],
            vision_start_token_id=ids["vision_start_token"],
            vision_end_token_id=ids["vision_end_token"],
        )
        model_class = transformers.Qwen3VLForConditionalGeneration
    else:
        vision.update(window_size=2 * patch * 2, fullatt_block_indexes=[1])
        config = transformers.Qwen2_5_VLConfig(
            text_config=text,
            vision_config=vision,
            image_token_id=ids["image_token"],
            video_token_id=ids["video_token"],
            vision_start_token_id=ids["vision_start_token"],
            vision_end_token_id=ids["vision_end_token"],
        )
        model_class = transformers.Qwen2_5_VLForConditionalGeneration
    processor = build_qwen_vl_processor(version, tokenizer, patch, side=patch * 2 * 2)  # 2x2 merged tokens
    return model_class(config), processor


def build_qwen_vl_processor(version: str, tokenizer, patch: int, side: int):
    """Qwen2.5-VL's or Qwen3-VL's processor resizing every frame to ``side`` x ``side`` pixels (Qwen3-VL: a few
    tokens per temporal group, its bounds count the pixels of all frames together)."""
    import transformers

    pixels = {"shortest_edge": side * side, "longest_edge": side * side}
    common = dict(size=pixels, patch_size=patch, temporal_patch_size=2, merge_size=2)
    if version == "3":
        processor_class, video_class, template = (
            transformers.Qwen3VLProcessor,
            transformers.Qwen3VLVideoProcessor,
            QWEN3_VL_CHAT_TEMPLATE,
        )
        video_kwargs = dict(
            common, size={"shortest_edge": 4 * side * side, "longest_edge": 16 * side * side}, do_sample_frames=False
        )
    else:
        processor_class, video_class, template = (
            transformers.Qwen2_5_VLProcessor,
            transformers.Qwen2VLVideoProcessor,
            QWEN2_5_VL_CHAT_TEMPLATE,
        )
        video_kwargs = dict(common, cap_pixels_per_frame=True)
    return processor_class(
        image_processor=transformers.Qwen2VLImageProcessor(**common),
        tokenizer=tokenizer,
        video_processor=video_class(**video_kwargs),
        chat_template=template,
    )


def _videollama3(num_layers: int, hidden_size: int, token_compression: bool):
    import transformers

    named = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"}
    tokenizer = build_chat_tokenizer(named)
    patch = 14
    config = transformers.VideoLlama3Config(
        text_config=dict(_text_config(tokenizer, num_layers, hidden_size), model_type="qwen2"),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=patch
        ),
        image_token_id=tokenizer.convert_tokens_to_ids(named["image_token"]),
        video_token_id=tokenizer.convert_tokens_to_ids(named["video_token"]),
        use_token_compression=token_compression,
    )
    if token_compression:  # mapflow turns compression off for this family (as the paper) unless a checkpoint asks
        config.mapflow_keep_token_compression = True
    side = patch * 2 * 2
    pixels = dict(min_pixels=side * side, max_pixels=side * side, patch_size=patch, merge_size=2)
    video_pixels = dict(pixels, max_pixels=4 * side * side)  # a few tokens per frame
    processor = transformers.VideoLlama3Processor(
        image_processor=transformers.VideoLlama3ImageProcessor(**pixels),
        tokenizer=tokenizer,
        video_processor=transformers.VideoLlama3VideoProcessor(**video_pixels, use_token_compression=token_compression),
        chat_template=VIDEOLLAMA3_CHAT_TEMPLATE,
    )
    return transformers.VideoLlama3ForConditionalGeneration(config), processor


def _internvl(num_layers: int, hidden_size: int):
    import transformers

    named = {
        "context_image_token": "<IMG_CONTEXT>",
        "start_image_token": "<img>",
        "end_image_token": "</img>",
        "video_token": "<video>",
    }
    tokenizer = build_chat_tokenizer(named)
    side, patch = 56, 14
    image_seq_length = (side // patch) ** 2 // 4  # pixel shuffle with ratio 0.5
    config = transformers.InternVLConfig(
        text_config=dict(_text_config(tokenizer, num_layers, hidden_size), model_type="qwen2"),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=[side, side],
            patch_size=[patch, patch],
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=image_seq_length,
        downsample_ratio=0.5,
        tie_word_embeddings=False,
    )
    size = {"height": side, "width": side}
    processor = transformers.InternVLProcessor(
        image_processor=transformers.GotOcr2ImageProcessor(size=size, crop_to_patches=False),
        tokenizer=tokenizer,
        video_processor=transformers.InternVLVideoProcessor(size=size),
        image_seq_length=image_seq_length,
        chat_template=INTERNVL_CHAT_TEMPLATE,
    )
    return transformers.InternVLForConditionalGeneration(config), processor


def _llava_onevision(num_layers: int, hidden_size: int):
    import transformers

    named = {"image_token": "<image>", "video_token": "<video>"}
    tokenizer = build_chat_tokenizer(named)
    side, patch = 32, 8
    config = transformers.LlavaOnevisionConfig(
        text_config=dict(_text_config(tokenizer, num_layers, hidden_size), model_type="qwen2"),
        vision_config=dict(
            model_type="siglip_vision_model",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=side,
            patch_size=patch,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=[[side, side]],
    )
    size = {"height": side, "width": side}
    processor = transformers.LlavaOnevisionProcessor(
        image_processor=transformers.LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=[[side, side]]),
        tokenizer=tokenizer,
        video_processor=transformers.LlavaOnevisionVideoProcessor(size=size),
        num_image_tokens=(side // patch) ** 2,
        vision_feature_select_strategy="full",
        chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE,
    )
    return transformers.LlavaOnevisionForConditionalGeneration(config), processor


TINY_BUILDERS = {
    "qwen2_5_vl": lambda layers, hidden: _qwen_vl("2.5", layers, hidden),
    "qwen3_vl": lambda layers, hidden: _qwen_vl("3", layers, hidden),
    "videollama3": lambda layers, hidden: _videollama3(layers, hidden, token_compression=False),
    "videollama3_compressed": lambda layers, hidden: _videollama3(layers, hidden, token_compression=True),
    "internvl": _internvl,
    "llava_onevision": _llava_onevision,
}


def build_tiny_family(family: str, out_dir, *, seed: int = 0, num_layers: int = 4, hidden_size: int = 64) -> Path:
    """Write a random tiny checkpoint of ``family`` (a key of `TINY_BUILDERS`) with its processor to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model, processor = TINY_BUILDERS[family](num_layers, hidden_size)
    model.eval().save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / "mapflow_origin.json").write_text(
        json.dumps(
            {
                "builder": "mapflow.testing.tiny_families.build_tiny_family",
                "family": family,
                "seed": seed,
                "num_layers": num_layers,
                "hidden_size": hidden_size,
                "note": "random weights; for tests only",
            },
            indent=2,
        )
    )
    return out_dir

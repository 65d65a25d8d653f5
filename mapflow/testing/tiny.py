"""Tiny LLaVA-NeXT-Video checkpoints built from a config, saved in Hugging Face format.

Nothing can be downloaded here, so tests and the embedded default need a model that `from_pretrained` can load from a
local directory, with a real tokenizer and processor. The weights are random (seeded): these models say nothing about
video LLMs, they only exercise every code path exactly as a real checkpoint would.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<video>", "<image>"]

# Text the tokenizer is trained on: the paper's prompt pieces and the synthetic benchmark's words, so prompts
# tokenize into word-sized pieces (byte-level fallback covers everything else).
_CORPUS = [
    "Carefully watch the video and pay attention to the cause and sequence of events, the detail and movement of "
    "objects, and the action and pose of persons. Based on your observations, select the best option that accurately "
    "addresses the question.",
    "USER: ASSISTANT: Best option:( Question: Options: (A) (B) (C) (D) (E) Only give the best option.",
    "Which direction does the red green blue yellow white purple orange gray square cube sphere move in the video?",
    "Up and to the left. Up and to the right. Down and to the left. Down and to the right.",
    "What's the right option for how the scenes in the video change? From the forest beach desert city snow to the",
    "What is the action being performed in the video? What did the person do first? How many objects are moving "
    "when the video begins? 0 1 2 3 4 Wear jacket. Take off jacket. Put down the blanket. Took the towel.",
    "A B C D E a b c d e ( ) . , ? : \n",
]


def train_byte_level_bpe(
    special_tokens: list[str], vocab_size: int = 512, corpus: list[str] | None = None, unk_token: str | None = "<unk>"
):
    """A byte-level BPE `tokenizers.Tokenizer` trained (deterministically) on ``corpus`` (default `_CORPUS`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=unk_token))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator((corpus or _CORPUS) * 4, trainer=trainer)
    return tokenizer


def build_tiny_tokenizer(vocab_size: int = 512, corpus: list[str] | None = None):
    """A byte-level BPE tokenizer trained (deterministically) on ``corpus`` (default `_CORPUS`), for transformers."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tokenizer = train_byte_level_bpe(SPECIAL_TOKENS, vocab_size, corpus)
    bos_id = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"video_token": "<video>", "image_token": "<image>"},
    )


def tiny_llava_next_video_config(
    vocab_size: int,
    video_token_id: int,
    image_token_id: int,
    *,
    image_size: int = 64,
    patch_size: int = 8,
    hidden_size: int = 64,
    num_layers: int = 6,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    vision_hidden_size: int = 32,
    vision_layers: int = 2,
):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextVideoConfig

    vision = CLIPVisionConfig(
        hidden_size=vision_hidden_size,
        intermediate_size=2 * vision_hidden_size,
        num_hidden_layers=vision_layers,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=vision_hidden_size,
    )
    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        tie_word_embeddings=False,
    )
    return LlavaNextVideoConfig(
        vision_config=vision,
        text_config=text,
        video_token_id=video_token_id,
        image_token_id=image_token_id,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        spatial_pool_stride=2,
        spatial_pool_mode="average",
        image_grid_pinpoints=[[image_size, image_size]],
        image_seq_length=16,
        video_seq_length=16,
        tie_word_embeddings=False,
    )


def build_tiny_processor(tokenizer, image_size: int, patch_size: int, **video_processor_kwargs):
    from transformers import LlavaNextImageProcessor, LlavaNextVideoProcessor, LlavaNextVideoVideoProcessor

    size = {"shortest_edge": image_size}
    crop = {"height": image_size, "width": image_size}
    video_processor = LlavaNextVideoVideoProcessor(size=size, crop_size=crop, **video_processor_kwargs)
    image_processor = LlavaNextImageProcessor(
        size=size, crop_size=crop, image_grid_pinpoints=[[image_size, image_size]]
    )
    return LlavaNextVideoProcessor(
        video_processor=video_processor,
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
    )


def build_tiny_llava_next_video(
    out_dir, *, seed: int = 0, num_layers: int = 6, image_size: int = 64, patch_size: int = 8, hidden_size: int = 64
) -> Path:
    """Write a random tiny LLaVA-NeXT-Video checkpoint (model, tokenizer, processor) to `out_dir`."""
    from transformers import LlavaNextVideoForConditionalGeneration

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    config = tiny_llava_next_video_config(
        vocab_size=len(tokenizer),
        video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
    )
    torch.manual_seed(seed)
    model = LlavaNextVideoForConditionalGeneration(config).eval()
    model.save_pretrained(out_dir)
    build_tiny_processor(tokenizer, image_size, patch_size).save_pretrained(out_dir)
    (out_dir / "mapflow_origin.json").write_text(
        json.dumps(
            {
                "builder": "mapflow.testing.tiny.build_tiny_llava_next_video",
                "seed": seed,
                "num_layers": num_layers,
                "image_size": image_size,
                "patch_size": patch_size,
                "hidden_size": hidden_size,
                "note": "random weights; for tests and the offline demo only",
            },
            indent=2,
        )
    )
    return out_dir

"""Convert an original InternVL-Chat checkpoint (OpenGVLab "remote code" layout, e.g. the paper's
Mini-InternVL-4B-Video-FT) into a native `InternVLForConditionalGeneration` checkpoint.

The original `InternVLChatModel` is InternViT (fused ``attn.qkv``, ``norm1``/``norm2``, layer scale ``ls1``/``ls2``,
no final norm), CLS dropped, pixel shuffle (ratio 0.5, ``ps_version`` v2), the projector ``mlp1`` (LayerNorm, Linear,
GELU, Linear) and a causal LM whose ``<IMG_CONTEXT>`` embeddings are replaced by the frame features in order. The
native class computes exactly this once the weights are renamed (qkv split into q/k/v) and the config says: no final
vision norm (``use_mean_pooling``), CLS dropped (``vision_feature_select_strategy="default"``), the same feature layer,
untied LM head. tests/test_internvl_convert.py proves it against a re-implementation of the original forward.

Both towers list hidden states as (embeddings, layer 1, …), so ``select_layer`` carries over as is. Refused, because
the native class would compute something else or fail: ``ps_version`` v1 (each frame's token grid comes out
transposed), ``select_layer`` 0, qk-norm with an eps other than the native 1e-6, and Phi-3 rope scaling other than
``su``/``longrope``. Phi-3's ``su`` scaling becomes transformers 5's ``longrope`` (same factors, same switch at the
original context length, same attention factor).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import ModelLoadError
from .internvl import SINGLE_RUN_KEY

IMAGENET_MEAN = [0.485, 0.456, 0.406]  # the original InternVL image transform
IMAGENET_STD = [0.229, 0.224, 0.225]
NAMED_TOKENS = {
    "context_image_token": "<IMG_CONTEXT>",
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "video_token": "<video>",
}  # <video> is only the prompt placeholder the processor expands

_VIT_LAYER = r"vision_model\.encoder\.layers\.(\d+)\."
_HF_LAYER = r"model.vision_tower.encoder.layer.\1."
# (original name pattern, native name); the fused qkv is split separately
_RENAMES = [
    (r"vision_model\.embeddings\.class_embedding$", "model.vision_tower.embeddings.cls_token"),
    (r"vision_model\.embeddings\.position_embedding$", "model.vision_tower.embeddings.position_embeddings"),
    (r"vision_model\.embeddings\.patch_embedding\.", "model.vision_tower.embeddings.patch_embeddings.projection."),
    (_VIT_LAYER + r"attn\.proj\.", _HF_LAYER + "attention.projection_layer."),
    (_VIT_LAYER + r"attn\.(q|k)_norm\.", _HF_LAYER + r"attention.\2_norm."),
    (_VIT_LAYER + r"norm1\.", _HF_LAYER + "layernorm_before."),
    (_VIT_LAYER + r"norm2\.", _HF_LAYER + "layernorm_after."),
    (_VIT_LAYER + r"ls1$", _HF_LAYER + "lambda_1"),
    (_VIT_LAYER + r"ls2$", _HF_LAYER + "lambda_2"),
    (_VIT_LAYER + r"mlp\.(fc1|fc2)\.", _HF_LAYER + r"mlp.\2."),
    (r"mlp1\.0\.", "model.multi_modal_projector.layer_norm."),
    (r"mlp1\.1\.", "model.multi_modal_projector.linear_1."),
    (r"mlp1\.3\.", "model.multi_modal_projector.linear_2."),
    (r"language_model\.model\.", "model.language_model."),
    (r"language_model\.lm_head\.", "lm_head."),
]
_QKV = re.compile(_VIT_LAYER + r"attn\.qkv\.(weight|bias)$")
_DROPPED = re.compile(r"(rotary_emb\.inv_freq|position_ids)$")  # buffers the native class rebuilds


def convert_state_dict(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original InternVL-Chat weight names -> native `InternVLForConditionalGeneration` names."""
    out = {}
    for name, tensor in weights.items():
        if _DROPPED.search(name):
            continue
        if match := _QKV.match(name):
            layer, kind = match.groups()
            # qkv rows are (3, heads, head_dim) flattened: q, then k, then v
            for part, chunk in zip("qkv", tensor.chunk(3, dim=0)):
                out[f"model.vision_tower.encoder.layer.{layer}.attention.{part}_proj.{kind}"] = chunk.contiguous()
            continue
        for pattern, replacement in _RENAMES:
            new, found = re.subn("^" + pattern, replacement, name)
            if found:
                out[new] = tensor
                break
        else:
            raise ModelLoadError(f"weight {name!r} has no place in InternVLForConditionalGeneration")
    return out


def _vision_config(original: dict, image_size: int) -> dict:
    qk_norm = bool(original.get("qk_normalization", False))
    eps = float(original.get("layer_norm_eps", 1e-6))
    if qk_norm and eps != 1e-6:
        raise ModelLoadError(f"qk normalization with eps {eps}: the native class's q/k norms use 1e-6")
    return dict(
        model_type="internvl_vision",
        hidden_size=original["hidden_size"],
        num_hidden_layers=original["num_hidden_layers"],
        num_attention_heads=original["num_attention_heads"],
        intermediate_size=original["intermediate_size"],
        hidden_act=original.get("hidden_act", "gelu"),
        attention_bias=bool(original.get("qkv_bias", True)),
        use_qk_norm=qk_norm,
        norm_type=original.get("norm_type", "rms_norm"),  # the original config class defaults to RMSNorm
        layer_norm_eps=eps,
        image_size=[image_size, image_size],
        patch_size=[original["patch_size"]] * 2,
        num_channels=original.get("num_channels", 3),
        layer_scale_init_value=original.get("initializer_factor", 0.1),
        use_mean_pooling=True,  # -> no final LayerNorm: InternViT has none
        use_absolute_position_embeddings=True,
        use_mask_token=False,
        hidden_dropout_prob=0.0,
        attention_dropout=0.0,
        projection_dropout=0.0,
    )


def _text_config(original: dict) -> dict:
    dropped = {
        "architectures",
        "auto_map",
        "_name_or_path",
        "transformers_version",
        "attn_implementation",
        "_attn_implementation",
        "_attn_implementation_autoset",
        "use_cache",
    }
    config = {k: v for k, v in original.items() if k not in dropped}
    config["tie_word_embeddings"] = bool(original.get("tie_word_embeddings", False))
    if config.get("model_type") == "phi3":
        config["rope_parameters"] = _phi3_rope(
            config.pop("rope_scaling", None),
            config.pop("rope_theta", 10000.0),
            config.get("original_max_position_embeddings"),
        )
    return config


def _phi3_rope(scaling: dict | None, theta: float, original_max: int | None) -> dict:
    """Phi-3's transformers-4 ``rope_scaling`` (``su``: short/long factors, switched at the original context length,
    with the attention factor from max / original positions) as transformers-5 ``rope_parameters`` (``longrope``),
    which needs the original context length inside."""
    if scaling is None:
        return {"rope_type": "default", "rope_theta": theta}
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind not in ("su", "longrope"):
        raise ModelLoadError(f"Phi-3 rope scaling {kind!r} is not supported (only su/longrope)")
    return {
        "rope_type": "longrope",
        "rope_theta": theta,
        "short_factor": scaling["short_factor"],
        "long_factor": scaling["long_factor"],
        "original_max_position_embeddings": scaling.get("original_max_position_embeddings", original_max),
    }


def convert_config(original: dict, image_token_id: int) -> dict:
    """The native config for an original InternVL-Chat config (``model_type`` internvl_chat)."""
    if original.get("ps_version", "v1") != "v2":
        raise ModelLoadError(
            "ps_version v1 leaves each frame's token grid transposed; InternVLForConditionalGeneration "
            "does the v2 pixel shuffle, so this checkpoint cannot be converted"
        )
    select_layer = int(original.get("select_layer", -1))
    if select_layer == 0:  # the native class reads 0 as "no hidden states requested" and fails
        raise ModelLoadError("select_layer 0 (the patch embeddings) cannot be selected in the native class")
    vision, llm = original["vision_config"], original["llm_config"]
    image_size = int(original.get("force_image_size") or vision["image_size"])
    ratio = float(original.get("downsample_ratio", 0.5))
    text = _text_config(llm)
    return {
        "architectures": ["InternVLForConditionalGeneration"],
        "model_type": "internvl",
        "vision_config": _vision_config(vision, image_size),
        "text_config": text,
        "image_token_id": int(image_token_id),
        "image_seq_length": int((image_size // vision["patch_size"]) ** 2 * ratio**2),
        "downsample_ratio": ratio,
        "projector_hidden_act": "gelu",  # mlp1's nn.GELU() is the exact (erf) GELU
        "vision_feature_layer": select_layer,
        "vision_feature_select_strategy": "default",  # CLS dropped
        "tie_word_embeddings": text["tie_word_embeddings"],
        "dtype": original.get("torch_dtype") or llm.get("torch_dtype") or "bfloat16",
        SINGLE_RUN_KEY: True,
    }


def _weight_files(src: Path) -> list[Path]:
    files = sorted(src.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{src} holds no .safetensors weights (convert .bin files to safetensors first)")
    return files


def _convert_weights(src: Path, dst: Path) -> None:
    """Shard by shard, keeping the original split, with a fresh index when there are several shards."""
    weight_map = {}
    files = _weight_files(src)
    for file in files:
        converted = convert_state_dict(load_file(file))
        save_file(converted, dst / file.name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(converted, file.name))
    if len(files) > 1:
        index = {"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}
        (dst / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def _has_tokenizer(src: Path) -> bool:
    return any((src / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json"))


def _write_processor(src: Path, dst: Path, config: dict) -> int:
    """An InternVLProcessor from the checkpoint's tokenizer; returns the ``<IMG_CONTEXT>`` id."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(src, local_files_only=True)
    image_tokens = [NAMED_TOKENS[name] for name in ("context_image_token", "start_image_token", "end_image_token")]
    missing = [t for t in image_tokens if t not in tokenizer.get_vocab()]
    if missing:
        raise ModelLoadError(f"the tokenizer in {src} lacks {missing}: not an InternVL-Chat tokenizer")
    # the native processor finds its image tokens by name on the tokenizer
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        src, local_files_only=True, extra_special_tokens=NAMED_TOKENS
    )
    side = config["vision_config"]["image_size"][0]
    size = {"height": side, "width": side}
    norm = dict(image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    # frames as the paper's loader makes them: bicubic resize of the short side, then a centre crop
    frames = transformers.InternVLVideoProcessor(
        size={"shortest_edge": side}, do_center_crop=True, crop_size=size, **norm
    )
    processor = transformers.InternVLProcessor(
        image_processor=transformers.GotOcr2ImageProcessor(size=size, crop_to_patches=False, **norm),
        video_processor=frames,
        tokenizer=tokenizer,
        image_seq_length=config["image_seq_length"],
    )
    processor.save_pretrained(dst)
    return tokenizer.convert_tokens_to_ids(NAMED_TOKENS["context_image_token"])


def convert_internvl_chat_checkpoint(src_dir, out_dir, *, image_token_id: int | None = None) -> Path:
    """Write the original InternVL-Chat checkpoint in ``src_dir`` as a native InternVL checkpoint in ``out_dir``.

    The processor (frames resized on the short side and centre-cropped to the tower's 448 px, ImageNet normalization,
    the checkpoint's tokenizer with its ``<img>``/``</img>``/``<IMG_CONTEXT>`` tokens named for the native processor)
    is written when ``src_dir`` has a tokenizer; without one pass
    ``image_token_id`` (the ``<IMG_CONTEXT>`` id) and add a processor to ``out_dir`` before `load_adapter`.
    The config asks mapflow's InternVL adapter for the paper's single ``<img>…</img>`` video run.
    """
    src, dst = Path(src_dir), Path(out_dir)
    config_file = src / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{src} is not a checkpoint directory: no config.json")
    original = json.loads(config_file.read_text())
    if original.get("model_type") != "internvl_chat" or "llm_config" not in original:
        raise ModelLoadError(f"{config_file} is not an original InternVL-Chat config (model_type internvl_chat)")
    _weight_files(src)
    dst.mkdir(parents=True, exist_ok=True)
    config = convert_config(original, image_token_id if image_token_id is not None else -1)
    if _has_tokenizer(src):
        found = _write_processor(src, dst, config)
        if image_token_id is not None and image_token_id != found:
            raise ModelLoadError(f"image_token_id {image_token_id} is not the tokenizer's <IMG_CONTEXT> ({found})")
        config["image_token_id"] = found
    elif image_token_id is None:
        raise ModelLoadError(f"{src} has no tokenizer: pass image_token_id (the <IMG_CONTEXT> id)")
    _convert_weights(src, dst)
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    if (src / "generation_config.json").is_file():
        shutil.copy2(src / "generation_config.json", dst / "generation_config.json")
    return dst

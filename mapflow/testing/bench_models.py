"""The model a ``mapflow bench`` run measures: a checkpoint directory, the embedded organism, a tiny random model with
LLaVA-NeXT-Video-7B's token layout, or a 7B-shaped random model (`shapes`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..models.base import VideoLLMAdapter

# `mapflow bench --shape`: the embedded organism, tiny random models with LLaVA-NeXT-Video-7B's token layout, and the
# full 7B configurations (`mapflow.testing.shapes`)
TINY_LAYOUT_SHAPES = {"llava-8x144": 8, "llava-24x144": 24}
BENCH_SHAPES = ("organism", *TINY_LAYOUT_SHAPES, "llava-next-video-7b", "qwen2.5-vl-7b")


@dataclass
class BenchModel:
    adapter: VideoLLMAdapter
    data: object  # benchmark root
    frames: int
    name: str
    notes: str = ""  # what differs from the named model (reduced layers), for the report's first line


def load_bench_model(
    shape: str,
    scratch,
    *,
    model=None,
    data=None,
    frames: int | None = None,
    layers: int | None = None,
    vision_layers: int | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    device_map=None,
    attn: str = "sdpa",
    seed: int = 0,
) -> BenchModel:
    """The model a `mapflow bench` run measures: a checkpoint directory (``model``) or a ``shape`` of `BENCH_SHAPES`
    (7B shapes are built in memory on ``device`` / ``device_map`` in ``dtype``; the others load from disk)."""
    from pathlib import Path

    from ..embedded import DEFAULT_DATA_DIR, TINY_BENCH_DIR, default_model_dir
    from ..models import load_adapter
    from .shapes import SHAPES, build_shape

    if shape not in BENCH_SHAPES:
        raise ValueError(f"unknown bench shape '{shape}'; known: {', '.join(BENCH_SHAPES)}")
    if shape in SHAPES and model is None:
        spec = SHAPES[shape]
        adapter = build_shape(
            shape,
            dtype=dtype,
            device=device,
            device_map=device_map,
            text_layers=layers,
            vision_layers=vision_layers,
            seed=seed,
            attn_implementation=attn,
        )
        text, vision = adapter.num_layers, _vision_layers(adapter)
        notes = (
            f"{spec.checkpoint} configuration, random weights; {text} of {spec.text_layers} decoder layers, "
            f"{vision} of {spec.vision_layers} vision layers"
            + (" (reduced)" if (text, vision) != (spec.text_layers, spec.vision_layers) else "")
            + f"; published tokenizer: {spec.tokenizer}"
        )
        return BenchModel(adapter, Path(data or TINY_BENCH_DIR), frames or 8, shape, notes)
    if model:
        model_dir, root = Path(model), Path(data or DEFAULT_DATA_DIR)
    elif shape in TINY_LAYOUT_SHAPES:
        from .tiny import build_tiny_llava_next_video

        # LLaVA-NeXT-Video-7B's token layout (12x12 pooled tokens per frame, the paper's long prompt) on a tiny
        # random text model: the sequence shape decides how much an exact plan can save
        model_dir = build_tiny_llava_next_video(
            Path(scratch) / shape, image_size=96, patch_size=4, num_layers=layers or 32
        )  # 96 px / 4 / pool 2 = 12x12
        root = Path(data or TINY_BENCH_DIR)
        frames = frames or TINY_LAYOUT_SHAPES[shape]
    else:
        model_dir, root = default_model_dir(), Path(data or DEFAULT_DATA_DIR)
    adapter = load_adapter(model_dir, attn_implementation=attn, dtype=dtype, device=device, device_map=device_map)
    return BenchModel(adapter, root, frames or 8, model_dir.name)


def _vision_layers(adapter: VideoLLMAdapter) -> int:
    vision = adapter.hf_model.config.vision_config
    return getattr(vision, "num_hidden_layers", None) or vision.depth

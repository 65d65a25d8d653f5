"""Load a local Hugging Face video LLM behind the one adapter interface."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelLoadError
from ..inputs.prompts import LLAVA_MCQA, TEMPLATES, McqaTemplate, PromptSegment
from .base import PreparedInput, VideoLLMAdapter
from .internvl import InternVLAdapter
from .llava_next_video import LlavaNextVideoAdapter
from .llava_onevision import LlavaOnevisionAdapter
from .qwen_vl import Qwen2_5_VLAdapter, Qwen3VLAdapter
from .videollama3 import VideoLlama3Adapter

FAMILIES: tuple[type[VideoLLMAdapter], ...] = (
    LlavaNextVideoAdapter,
    LlavaOnevisionAdapter,
    Qwen2_5_VLAdapter,
    Qwen3VLAdapter,
    InternVLAdapter,
    VideoLlama3Adapter,
)
ADAPTERS: dict[str, type[VideoLLMAdapter]] = {arch: cls for cls in FAMILIES for arch in cls.architectures}

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "float64": torch.float64,
    "fp64": torch.float64,
}  # float64: references for exactness checks


def _architecture(path: Path) -> str:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{path} is not a Hugging Face checkpoint directory: no config.json")
    try:
        architectures = json.loads(config_file.read_text()).get("architectures") or []
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{config_file} is not valid JSON: {err}") from None
    for arch in architectures:
        if arch in ADAPTERS:
            return arch
    raise ModelLoadError(
        f"{config_file}: architecture {architectures or '(none)'} is not supported; supported: "
        f"{', '.join(sorted(ADAPTERS))}"
    )


def _checkpoint_prompt_template(path: Path) -> McqaTemplate | None:
    """A checkpoint may name its prompt template in ``mapflow.json`` (the model organisms do)."""
    meta_file = path / "mapflow.json"
    if not meta_file.is_file():
        return None
    name = json.loads(meta_file.read_text()).get("prompt_template")
    if name is None:
        return None
    if name not in TEMPLATES:
        raise ModelLoadError(f"{meta_file}: unknown prompt_template '{name}'; known: {', '.join(TEMPLATES)}")
    return TEMPLATES[name]


def resolve_dtype(dtype: str, device: str = "cpu", device_map=None) -> str:
    """``auto``: bfloat16 on a GPU (the paper's precision), float32 elsewhere (CPU kernels in bfloat16 are slow and
    round differently; the embedded organisms were trained in float32). Any other name is returned as given."""
    if dtype != "auto":
        return dtype
    on_gpu = device_map is not None or str(device).startswith(("cuda", "mps"))
    return "bfloat16" if on_gpu else "float32"


def load_adapter(
    path,
    *,
    attn_implementation: str = "sdpa",
    dtype: str = "auto",
    device: str = "cpu",
    device_map: str | dict | None = None,
    self_test: bool = True,
) -> VideoLLMAdapter:
    """Load a checkpoint directory (never the hub) and wrap it in its family's adapter.

    ``dtype``: auto | float32 | bfloat16 | float16 (aliases fp32, bf16, fp16); ``auto`` is bfloat16 on a GPU (as the
    paper runs), float32 on a CPU (`resolve_dtype`). ``device_map`` (e.g. ``"auto"``) places the
    model across the visible GPUs through accelerate instead of moving it to ``device``; inputs then go to the
    embedding's device and every knockout mask is built on its layer's device. With ``self_test`` the adapter checks
    on a small synthetic clip that an empty knockout reproduces the clean logits exactly and that a real knockout
    changes them.
    """
    import transformers
    from transformers import AutoProcessor

    transformers.utils.logging.disable_progress_bar()  # one bar per weight file drowns the run's own progress bar

    path = Path(path).expanduser()
    if not path.is_dir():
        raise ModelLoadError(f"model directory {path} does not exist")
    arch = _architecture(path)
    dtype = resolve_dtype(dtype, device, device_map)
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
    model_class = getattr(transformers, arch)
    placement = {"device_map": device_map} if device_map is not None else {}
    try:
        hf_model = model_class.from_pretrained(
            path, attn_implementation=attn_implementation, dtype=DTYPES[dtype], local_files_only=True, **placement
        )
    except (OSError, ValueError, ImportError) as err:
        raise ModelLoadError(f"cannot load {arch} from {path}: {err}") from err
    except Exception as err:  # safetensors and transformers raise their own types for these two
        if (known := _load_error(path, err)) is None:
            raise
        raise known from err
    if device_map is None:
        hf_model = hf_model.to(device)
    hf_model = hf_model.eval()
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    adapter = ADAPTERS[arch](hf_model, processor, path=path)
    adapter.prompt_template = _checkpoint_prompt_template(path) or adapter.default_prompt_template
    if self_test:
        adapter.self_test(self_test_input(adapter))
    return adapter


def _load_error(path: Path, err: Exception) -> ModelLoadError | None:
    """A sentence for a damaged weight file or a config.json that does not fit the weights (None for other errors)."""
    if type(err).__name__ == "SafetensorError":
        files = ", ".join(f"{f.name} ({f.stat().st_size} bytes)" for f in sorted(path.glob("*.safetensors")))
        return ModelLoadError(
            f"cannot read the weights in {path} [{files}]: {err}. The file is truncated, empty or "
            "not a safetensors file; copy or download it again (compare its size with the "
            "source's)"
        )
    if "mismatch" in str(err):
        return ModelLoadError(
            f"{path / 'config.json'} does not match the weights in {path}: tensors have other "
            "shapes than the config describes (the load report above lists them, e.g. the vision "
            "tower); use the config.json that came with these weights"
        )
    return None


def self_test_input(adapter: VideoLLMAdapter, num_frames: int | None = None, seed: int = 0) -> PreparedInput:
    """A few frames of seeded noise (the adapter's ``self_test_frames``, 2 by default) and a one-line question: enough
    for cross-frame and video->last edges."""
    num_frames = num_frames or adapter.self_test_frames
    size = adapter.default_frame_size()  # processors that do not resize need this exact size
    frames = np.random.default_rng(seed).integers(0, 256, (num_frames, size, size, 3), dtype=np.uint8)
    template = adapter.prompt_template or LLAVA_MCQA
    segments = [
        PromptSegment("system", template.before_video),
        PromptSegment("video", adapter.processor.video_token),
        PromptSegment("bridge", template.between_video_and_question),
        PromptSegment("question_text", "What happens in the video?"),
        PromptSegment("answer_prompt", template.answer_prompt),
    ]
    return adapter.prepare(frames, segments)


__all__ = [
    "ADAPTERS",
    "FAMILIES",
    "PreparedInput",
    "VideoLLMAdapter",
    "load_adapter",
    "resolve_dtype",
    "self_test_input",
]

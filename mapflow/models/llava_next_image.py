"""The paper's image-LLM baseline (Fig. 2): an image LLaVA-NeXT checkpoint run on video as PLLaVA runs it.

The paper compares each Video-FT model with the image model it was fine-tuned from (llava-v1.6-vicuna-7b/13b-hf,
`LlavaNextForConditionalGeneration`), loaded through the same PLLaVA wrapper: every frame is one 336 px crop (no
AnyRes), CLIP's selected layer without CLS goes through the image model's own projector, and the (T, 24, 24) grid is
average-pooled to ``pooling_shape`` (8, 12, 12); one ``<image>`` placeholder takes all T*12*12 tokens (spec §1.1).

`convert_llava_next_image_checkpoint` writes such a checkpoint as a LLaVA-NeXT-Video checkpoint that `load_adapter`
runs with exactly that computation: the weights are copied unchanged (the image and video classes share every weight
name: vision tower, projector, ``image_newline``, language model), the config becomes LLaVA-NeXT-Video's with
``mapflow_pllava_pooling_shape`` (so the inner model is `PllavaVideoModel`, project then pool), and the processor
becomes a LLaVA-NeXT-Video processor whose video placeholder is the model's own ``<image>`` token (no new token, so
the vocabulary and the LM head stay the image model's): frames resized on the short side and centre-cropped to the
image processor's crop size, with its normalization. The prompt is the paper's (``USER: <image>\\n USER: …``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import ModelLoadError
from .pllava import POOLING_KEY

IMAGE_ARCHITECTURE = "LlavaNextForConditionalGeneration"
PAPER_POOLING = (8, 12, 12)


def convert_llava_next_image_checkpoint(src, dst, pooling_shape=PAPER_POOLING) -> Path:
    """Write the image LLaVA-NeXT checkpoint ``src`` as a video checkpoint at ``dst`` (PLLaVA's pooling to
    ``pooling_shape`` = (frames, h, w); feed exactly ``frames`` frames)."""
    from transformers import AutoProcessor, LlavaNextVideoProcessor, LlavaNextVideoVideoProcessor

    src, dst = Path(src), Path(dst)
    config_file = src / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{src} is not a checkpoint directory: no config.json")
    config = json.loads(config_file.read_text())
    if IMAGE_ARCHITECTURE not in (config.get("architectures") or []):
        raise ModelLoadError(
            f"{config_file}: architecture {config.get('architectures')} is not "
            f"{IMAGE_ARCHITECTURE} (the paper's image LLaVA-NeXT baseline)"
        )
    if not any(src.glob("*.safetensors")):
        raise ModelLoadError(f"{src} holds no .safetensors weights")
    pooling_shape = [int(x) for x in pooling_shape]
    if len(pooling_shape) != 3:
        raise ModelLoadError(f"pooling_shape must be (frames, h, w), got {pooling_shape}")
    try:
        processor = AutoProcessor.from_pretrained(src, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot load the processor of {src}: {err}") from err
    image_processor, tokenizer = processor.image_processor, processor.tokenizer
    image_token = processor.image_token
    image_token_id = config.get("image_token_id", config.get("image_token_index"))
    if image_token_id is None or tokenizer.convert_tokens_to_ids(image_token) != image_token_id:
        raise ModelLoadError(
            f"{config_file}: the image token {image_token!r} and image_token_id {image_token_id} disagree"
        )

    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.is_file() and (item.suffix == ".safetensors" or item.name.endswith(".safetensors.index.json")):
            shutil.copy2(item, dst / item.name)
    crop = image_processor.crop_size
    crop = {"height": int(crop["height"]), "width": int(crop["width"])}
    video_processor = LlavaNextVideoVideoProcessor(
        size={"shortest_edge": min(crop.values())},
        crop_size=crop,
        do_center_crop=True,
        image_mean=list(image_processor.image_mean),
        image_std=list(image_processor.image_std),
    )
    video = LlavaNextVideoProcessor(
        video_processor=video_processor,
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=config["vision_config"].get("patch_size", processor.patch_size),
        vision_feature_select_strategy=config.get("vision_feature_select_strategy", "default"),
        video_token=image_token,
        image_token=image_token,
    )
    video.save_pretrained(dst)

    config.pop("image_token_index", None)
    config.update(
        architectures=["LlavaNextVideoForConditionalGeneration"],
        model_type="llava_next_video",
        image_token_id=image_token_id,
        video_token_id=image_token_id,
        spatial_pool_mode="average",
        spatial_pool_stride=2,
        **{POOLING_KEY: pooling_shape},
    )
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    (dst / "mapflow_origin.json").write_text(
        json.dumps(
            {
                "converted_from": str(src.resolve()),
                "converter": "mapflow.models.llava_next_image",
                "pooling_shape": pooling_shape,
                "video_placeholder": image_token,
            },
            indent=2,
        )
    )
    return dst

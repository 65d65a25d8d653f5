"""Prefill time and FLOPs of the paper's map as a pruned model, on LLaVA-NeXT-Video-7B's shape (issue 27, item 4).

The paper's map for LLaVA-NeXT-Video-7B (Table E(a): video -> question open in layers 5-19 of 32, 0-based) says the
video is read until layer 20 of 32 (1-based): the plan drops every video token after 0-based layer 19. On a model
with fewer decoder layers (CPU) the same share is kept: video in the first round(N * 20 / 32) layers. The model has
the published configuration with random weights (`mapflow.testing.shapes`): it measures speed, never accuracy.

Measured in one run on one prompt (a tvbench-mini clip, the published tokenizer, 144 tokens per frame): the pruned
prefill (`mapflow.pruning.forward.pruned_prefill`) against the unpruned one through the same code, alternating,
``--repeats`` times each after a warm-up (median wall time); counted FLOPs (`mapflow.pruning.flops.prefill_flops`)
at the run's depth and, from the configuration alone, at the full 32 layers.

    OMP_NUM_THREADS=2 .venv/bin/python scripts/prune_bench.py [--layers 8] [--frames 8] [--repeats 3]
    .venv/bin/python scripts/prune_bench.py --device cuda --layers 32      # on a GPU (bfloat16)
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch

from mapflow.pruning.flops import prefill_flops
from mapflow.pruning.forward import pruned_prefill
from mapflow.pruning.spec import PruneSpec

PAPER_LAYERS, PAPER_VIDEO_LAYERS = 32, 20  # video read until layer 20 of 32 (1-based)
SHAPE = "llava-next-video-7b"


def video_until(num_layers: int) -> int:
    """0-based L for a model of ``num_layers``: the video stays in the first round(N * 20 / 32) layers."""
    return max(1, round(num_layers * PAPER_VIDEO_LAYERS / PAPER_LAYERS)) - 1


def prompt(adapter, frames: int):
    from mapflow.analysis.resolve import choose_template, load_benchmark
    from mapflow.data.video import read_frames
    from mapflow.embedded import TINY_BENCH_DIR
    from mapflow.inputs.prompts import TEMPLATES, build_prompt

    sample = load_benchmark("tvbench", TINY_BENCH_DIR, limit=1)[0]
    built = build_prompt(sample, TEMPLATES[choose_template(None, adapter, "tvbench").name])  # the paper's for TVBench
    video = read_frames(sample, num_frames=frames, rule="segment_midpoint")
    return adapter.prepare(
        video.frames, built.segments, option_letters=built.option_letters, true_letter=built.true_letter
    )


def timed(adapter, prepared, spec: PruneSpec, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    with torch.no_grad():
        pruned_prefill(adapter, prepared, spec)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, help="decoder layers (default: 8 on CPU, 32 on a GPU)")
    parser.add_argument("--vision-layers", type=int, default=2, help="vision layers (not counted; default 2)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", help="default: float32 on CPU, bfloat16 on a GPU")
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    layers = args.layers or (PAPER_LAYERS if gpu else 8)
    dtype = args.dtype or ("bfloat16" if gpu else "float32")
    from mapflow.testing.shapes import build_shape

    adapter = build_shape(
        SHAPE, dtype=dtype, device=args.device, text_layers=layers, vision_layers=args.vision_layers, self_test=False
    )
    prepared = prompt(adapter, args.frames)
    last = video_until(layers)
    plan = PruneSpec(drop_after=last, drop="video")
    unpruned = PruneSpec()
    timed(adapter, prepared, unpruned, args.device)  # warm-up: allocations, kernels
    times = {"unpruned": [], "plan": []}
    for _ in range(args.repeats):  # alternating, so drift on a shared machine hits both alike
        times["unpruned"].append(timed(adapter, prepared, unpruned, args.device))
        times["plan"].append(timed(adapter, prepared, plan, args.device))
    median = {name: statistics.median(values) for name, values in times.items()}
    flops = {
        name: prefill_flops(adapter, prepared, spec).total for name, spec in (("unpruned", unpruned), ("plan", plan))
    }
    full_config = copy.deepcopy(adapter.text_config)
    full_config.num_hidden_layers = PAPER_LAYERS
    full_plan = PruneSpec(drop_after=PAPER_VIDEO_LAYERS - 1, drop="video")
    full = {
        "unpruned": prefill_flops(full_config, prepared, PruneSpec()).total,
        "plan": prefill_flops(full_config, prepared, full_plan).total,
    }
    layout = prepared.layout
    video = len(layout.positions("video"))
    result = {
        "shape": SHAPE,
        "device": args.device,
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "layers": layers,
        "vision_layers": args.vision_layers,
        "frames": args.frames,
        "seq_len": layout.seq_len,
        "video_tokens": video,
        "plan": plan.label(),
        "wall_s": median,
        "wall_ratio": median["plan"] / median["unpruned"],
        "flops": flops,
        "flops_ratio": flops["plan"] / flops["unpruned"],
        "flops_32_layers": full,
        "flops_ratio_32_layers": full["plan"] / full["unpruned"],
        "repeats": args.repeats,
    }
    print(
        f"{SHAPE} (random weights, {layers} of {PAPER_LAYERS} decoder layers, {args.vision_layers} vision layers, "
        f"{args.device} {dtype}, {torch.get_num_threads()} threads); prompt {layout.seq_len} tokens, {video} video"
    )
    print(f"plan: {plan.label()} (the paper's map, video read until layer 20 of 32, scaled to {layers} layers)")
    print(f"{'':10s} {'prefill s':>10s} {'TFLOPs':>8s} {'TFLOPs at 32 layers':>20s}")
    for name in ("unpruned", "plan"):
        print(f"{name:10s} {median[name]:10.3f} {flops[name] / 1e12:8.3f} {full[name] / 1e12:20.3f}")
    print(
        f"plan / unpruned: time {result['wall_ratio']:.3f}, FLOPs {result['flops_ratio']:.3f} "
        f"({result['flops_ratio_32_layers']:.3f} at 32 layers, video after layer {PAPER_VIDEO_LAYERS - 1})"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()

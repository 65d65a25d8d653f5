"""``mapflow bench``: the command line of the sweep benchmark (`mapflow.knockout.sweep_bench` measures, the model
it measures comes from `mapflow.testing.bench_models`), and its printed and JSON reports."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import MapflowError


def add_bench_parser(sub) -> None:
    """The ``bench`` subcommand."""
    from ..testing.bench_models import BENCH_SHAPES

    bench = sub.add_parser(
        "bench",
        help="the full paper sweep naive vs optimized in one run: time, work, memory, "
        "and the largest p_knockout difference",
    )
    bench.add_argument("--model", help="checkpoint directory (default: --shape)")
    bench.add_argument(
        "--shape",
        default="organism",
        choices=list(BENCH_SHAPES),
        help="organism: the embedded organism-video; llava-8x144: a tiny random model with "
        "LLaVA-NeXT-Video-7B's sequence layout (8 frames x 144 video tokens, paper prompt); "
        "llava-24x144: the same with 24 frames (~3.5k tokens, the memory check); "
        "llava-next-video-7b / qwen2.5-vl-7b: the full published configurations with random "
        "weights, built on --device in --dtype (see docs/scale.md 'Real scale')",
    )
    bench.add_argument(
        "--layers",
        type=int,
        help="decoder layers (default: the shape's own, 32 for llava-*; fewer on CPU, stated in the output)",
    )
    bench.add_argument("--vision-layers", type=int, help="vision-tower layers of the 7B shapes (default: all)")
    bench.add_argument("--frames", type=int, help="frames per clip (default 8; 24 for llava-24x144)")
    bench.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    bench.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    bench.add_argument("--device-map", help="'auto': accelerate spreads the model over the visible GPUs")
    bench.add_argument(
        "--memory-budget", help="plan packs within this much memory, e.g. 8GiB (default: what the device reports free)"
    )
    bench.add_argument("--json", help="also write the report to this JSON file")
    bench.add_argument("--seed", type=int, default=0, help="seed of the 7B shapes' random weights")
    bench.add_argument(
        "--skip-naive",
        action="store_true",
        help="run the optimized sweep alone (time and memory only; for sizes where naive is too slow)",
    )
    bench.add_argument(
        "--screen", action="store_true", help="also time the first-order screen (mapflow.knockout.screen)"
    )
    bench.add_argument("--data", help="benchmark root (default: the shipped one that fits the model)")
    bench.add_argument("--limit", type=int, default=1, help="samples per task")
    bench.add_argument("--max-samples", type=int, help="at most this many samples in all (CPU runs of 7B shapes)")
    bench.add_argument("--window", type=int, help="window size (default 9; 3 for models of at most 8 layers)")
    bench.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    bench.add_argument("--threads", type=int, default=1)
    bench.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    import os
    import platform
    import tempfile

    import torch

    from ..knockout.flows import Window
    from ..knockout.planner import MEMORY_BUDGET_ENV, parse_bytes
    from ..knockout.sweep_bench import benchmark
    from ..testing.bench_models import load_bench_model

    torch.set_num_threads(args.threads)
    if args.memory_budget:
        try:
            parse_bytes(args.memory_budget)
        except ValueError as err:
            raise MapflowError(f"--memory-budget: {err}") from None
        os.environ[MEMORY_BUDGET_ENV] = args.memory_budget
    with tempfile.TemporaryDirectory() as scratch:
        bench = load_bench_model(
            args.shape,
            scratch,
            model=args.model,
            data=args.data,
            frames=args.frames,
            layers=args.layers,
            vision_layers=args.vision_layers,
            dtype=args.dtype,
            device=args.device,
            device_map=args.device_map,
            attn=args.attn,
            seed=args.seed,
        )
        adapter = bench.adapter
        window = args.window or (3 if adapter.num_layers <= 8 else 9)
        report = benchmark(
            adapter,
            bench.data,
            limit=args.limit,
            window=Window("center", window),
            num_frames=bench.frames,
            naive=not args.skip_naive,
            screen=args.screen,
            max_samples=args.max_samples,
        )
    devices = ", ".join(sorted({str(p.device) for p in adapter.hf_model.parameters()}))
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_initialized() else ""
    description = (
        f"mapflow bench: {bench.name} ({adapter.num_layers} layers, attn {args.attn}, {args.dtype}, "
        f"{bench.frames} frames, on {devices}{gpu}), {torch.get_num_threads()} thread(s), "
        f"{platform.processor() or platform.machine()}" + (f"\n  {bench.notes}" if bench.notes else "")
    )
    print(format_report(report, description))
    if args.json:
        from ..testing.shapes import weight_bytes

        Path(args.json).write_text(
            json.dumps(
                report_json(
                    report,
                    description=description,
                    shape=bench.name,
                    frames=bench.frames,
                    dtype=args.dtype,
                    layers=adapter.num_layers,
                    weights_mib=weight_bytes(adapter.hf_model) / 2**20,
                ),
                indent=2,
                default=str,
            )
        )
    return 0


def format_report(report: dict, description: str) -> str:
    text = _format_exact(report, description)
    screen = report.get("screen")
    if screen is not None:
        text += (
            f"\nscreen (first-order estimate, not exact): wall {screen.wall:.2f} s, CPU {screen.cpu:.2f} s -> "
            f"{report['screen_wall_ratio']:.1f}x wall, {report['screen_cpu_ratio']:.1f}x CPU faster than optimized; "
            f"Spearman of p_knockout vs optimized over all cells {report['screen_spearman']:.2f}"
        )
    return text


def _format_exact(report: dict, description: str) -> str:
    naive, fast = report["naive"], report["optimized"]
    samples = report["samples"]
    lines = [
        description,
        f"{samples} sample(s), sequence length {report['seq_len']}, "
        f"{report['configs_per_sample']} (flow, layer) cells each, window {report['window']}",
    ]
    gpu = fast.cuda_peak_mib > 0
    if naive is None:
        lines += [
            f"{'':24s}{'optimized':>12s}",
            f"{'wall-clock s':24s}{fast.wall:>12.2f}",
            f"{'wall-clock s / sample':24s}{fast.wall / samples:>12.2f}",
            f"{'CPU s':24s}{fast.cpu:>12.2f}",
            f"{'forwards':24s}{fast.forwards:>12d}",
            f"{'token-layers computed':24s}{fast.token_layers:>12d}",
            f"{'peak RSS growth MiB':24s}{fast.memory_mib:>12.0f}",
        ]
        if gpu:
            lines.append(f"{'peak GPU memory MiB':24s}{fast.cuda_peak_mib:>12.0f}")
        lines.append("(naive phase skipped)")
        return "\n".join(lines)
    rows = [
        ("wall-clock s", f"{naive.wall:.2f}", f"{fast.wall:.2f}", f"{report['wall_ratio']:.1f}x"),
        ("wall-clock s / sample", f"{naive.wall / samples:.2f}", f"{fast.wall / samples:.2f}", ""),
        ("CPU s", f"{naive.cpu:.2f}", f"{fast.cpu:.2f}", f"{report['cpu_ratio']:.1f}x"),
        ("forwards", str(naive.forwards), str(fast.forwards), f"{naive.forwards / fast.forwards:.1f}x"),
        ("token-layers computed", str(naive.token_layers), str(fast.token_layers), f"{report['work_ratio']:.1f}x"),
        ("peak RSS growth MiB", f"{naive.memory_mib:.0f}", f"{fast.memory_mib:.0f}", ""),
    ]
    if gpu:
        rows.append(("peak GPU memory MiB", f"{naive.cuda_peak_mib:.0f}", f"{fast.cuda_peak_mib:.0f}", ""))
    lines.append(f"{'':24s}{'naive':>12s}{'optimized':>12s}{'ratio':>10s}")
    lines += [f"{name:24s}{a:>12s}{b:>12s}{r:>10s}" for name, a, b, r in rows]
    lines.append(f"max |delta p_knockout| naive vs optimized: {report['max_abs_diff_p_knockout']:.2e}")
    return "\n".join(lines)


def report_json(report: dict, **context) -> dict:
    """The report as plain JSON (phase results without their per-cell probabilities), with ``context`` added."""
    out = {key: value for key, value in report.items() if key not in ("naive", "optimized")}
    for phase in ("naive", "optimized"):
        result = report[phase]
        out[phase] = None if result is None else {k: v for k, v in vars(result).items() if k != "p_knockout"}
    return {**context, **out}

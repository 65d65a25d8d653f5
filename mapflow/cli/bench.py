"""``mapflow bench``: the paper's full knockout sweep, naive vs optimized, in one run on the same machine.

Both plans run every (flow, layer) cell of the 11 paper flows on the same samples. Reported: wall-clock and CPU time
with their ratios, forwards and token-layers computed, peak resident memory growth of each phase, and the largest
difference in ``p_knockout`` between the two. Where the platform can fork, each phase runs in a forked child of the
loaded process, so one phase's freed heap does not hide the next one's peak.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import psutil
import torch

from ..data import load_tvbench, read_frames
from ..knockout.engine import KnockoutConfig, clean_state, run_knockouts
from ..knockout.flows import PAPER_FLOWS, Flow, Window
from ..models.base import VideoLLMAdapter
from ..knockout.planner import work_of_plan
from ..inputs.prompts import mcqa_segments
from ..study.resolve import choose_template

SWEEP_FLOWS = [f for flows in PAPER_FLOWS.values() for f in flows]


class PeakMemory:
    """Peak resident-set growth of this process while the block runs (sampled every 2 ms)."""

    def __enter__(self):
        self.process = psutil.Process()
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self.running = True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        self.cuda_devices = range(torch.cuda.device_count()) if torch.cuda.is_initialized() else range(0)
        for device in self.cuda_devices:
            torch.cuda.reset_peak_memory_stats(device)
        return self

    def _watch(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        # summed over the GPUs the model spans (each one's own peak)
        self.cuda_peak = sum(torch.cuda.max_memory_allocated(device) for device in self.cuda_devices)

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.baseline) / 2**20


@dataclass
class PhaseResult:
    wall: float = 0.0
    cpu: float = 0.0
    forwards: int = 0
    token_layers: int = 0
    memory_mib: float = 0.0
    cuda_peak_mib: float = 0.0  # peak GPU memory allocated during the phase, weights included (0 without a GPU)
    p_knockout: list = field(default_factory=list)


def sweep_configs(layout, num_layers: int, window: Window) -> list[KnockoutConfig]:
    """Every (flow, layer) cell; like the studies, one blocked matrix per flow shared by its layers."""
    blocked = [torch.from_numpy(Flow.parse(f).block_matrix(layout)) for f in SWEEP_FLOWS]
    return [KnockoutConfig(b, window.layers(layer, num_layers)) for b in blocked for layer in range(num_layers)]


def screen_sweep(adapter: VideoLLMAdapter, prepared, window: Window) -> np.ndarray:
    """The screen's estimate of every (flow, layer) cell's predicted-token probability (`mapflow.knockout.screen`)."""
    from ..knockout.screen import probability_after, screen_cells, screen_forward

    forward = screen_forward(adapter, prepared)
    pred = int(forward.logits.argmax())
    patterns = [(torch.from_numpy(Flow.parse(f).block_matrix(prepared.layout)), None) for f in SWEEP_FLOWS]
    layer_sets = [window.layers(layer, adapter.num_layers) for layer in range(adapter.num_layers)]
    estimate = screen_cells(forward, forward.gradients([pred]), patterns, layer_sets)[..., 0]
    return probability_after(forward.logits, pred, estimate.numpy()).ravel()


def run_phase(adapter: VideoLLMAdapter, prepared_inputs, window: Window, plan: str) -> PhaseResult:
    result = PhaseResult()
    with PeakMemory() as memory:
        wall, cpu = time.perf_counter(), time.process_time()
        for prepared in prepared_inputs:
            if plan == "screen":
                result.p_knockout.append(screen_sweep(adapter, prepared, window))
                continue
            configs = sweep_configs(prepared.layout, adapter.num_layers, window)
            clean = clean_state(adapter, prepared) if plan == "auto" else None
            reference = clean.logits[-1] if clean is not None else run_knockouts(
                adapter, prepared, [KnockoutConfig(configs[0].blocked, ())], plan="naive")[0]
            logits = run_knockouts(adapter, prepared, configs, plan=plan, clean=clean)
            pred = int(reference.argmax())
            result.p_knockout.append(logits.softmax(-1)[:, pred].numpy())
        result.wall = time.perf_counter() - wall
        result.cpu = time.process_time() - cpu
    result.memory_mib = memory.growth_mib
    result.cuda_peak_mib = memory.cuda_peak / 2**20
    for prepared in prepared_inputs:  # bookkeeping, outside the timed region
        configs = sweep_configs(prepared.layout, adapter.num_layers, window)
        seq_len = prepared.layout.seq_len
        if plan == "screen":  # one forward and one backward (~2 forwards); attention-row recomputation not counted
            forwards, token_layers = 1, 3 * seq_len * adapter.num_layers
        elif plan == "auto":
            forwards, token_layers = work_of_plan(configs, adapter, seq_len)
        else:
            forwards, token_layers = len(configs) + 1, (len(configs) + 1) * seq_len * adapter.num_layers
        result.forwards += forwards
        result.token_layers += token_layers
    return result


# Frames decoded per clip; a longer sweep repeats them (the shipped clips are short, and the token layout, not the
# pixels, decides what a sweep costs).
DECODED_FRAMES = 8


def _clip(sample, num_frames: int) -> np.ndarray:
    frames = read_frames(sample, num_frames=min(num_frames, DECODED_FRAMES)).frames
    return frames[np.arange(num_frames) % len(frames)]


def _phase_in_child(connection, adapter, prepared_inputs, window, plan):
    connection.send(run_phase(adapter, prepared_inputs, window, plan))
    connection.close()


def run_phase_isolated(adapter: VideoLLMAdapter, prepared_inputs, window: Window, plan: str) -> PhaseResult:
    """`run_phase` in a forked child (same loaded model, fresh heap), or in this process where fork is missing or
    CUDA is in use (a forked child cannot use it; the GPU's peak counter is reset per phase instead)."""
    if "fork" not in multiprocessing.get_all_start_methods() or torch.cuda.is_initialized():
        return run_phase(adapter, prepared_inputs, window, plan)
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_phase_in_child, args=(send, adapter, prepared_inputs, window, plan))
    child.start()
    send.close()
    result = receive.recv()
    child.join()
    return result


def benchmark(adapter: VideoLLMAdapter, data_root, *, limit: int = 2, window: Window = Window("center", 9),
              num_frames: int = 8, seed: int = 42, naive: bool = True, screen: bool = False,
              max_samples: int | None = None) -> dict:
    """``naive=False`` runs the optimized plan alone (sizes where the naive sweep takes too long: memory checks);
    ``screen`` adds the first-order screen (`mapflow.knockout.screen`) and its speed and agreement against the exact plan;
    ``max_samples`` keeps the first samples only (CPU runs of the 7B shapes)."""
    samples = load_tvbench(data_root, limit=limit, seed=seed)[:max_samples]
    template = choose_template(None, adapter, "tvbench")
    prepared_inputs = [adapter.prepare(_clip(s, num_frames), mcqa_segments(s, template),
                                       option_letters=s.option_letters, true_letter=s.answer_letter)
                       for s in samples]
    run_phase(adapter, prepared_inputs[:1], window, "auto")  # warm-up: first-call allocations and lazy imports
    slow = run_phase_isolated(adapter, prepared_inputs, window, "naive") if naive else None
    fast = run_phase_isolated(adapter, prepared_inputs, window, "auto")
    report = {"samples": len(samples), "seq_len": [p.layout.seq_len for p in prepared_inputs],
              "configs_per_sample": len(SWEEP_FLOWS) * adapter.num_layers, "window": window.label,
              "naive": slow, "optimized": fast}
    if slow is not None:
        report.update(
            max_abs_diff_p_knockout=max(float(np.abs(a - b).max()) for a, b in zip(slow.p_knockout, fast.p_knockout)),
            wall_ratio=slow.wall / fast.wall, cpu_ratio=slow.cpu / fast.cpu,
            work_ratio=slow.token_layers / fast.token_layers)
    if screen:
        estimate = run_phase_isolated(adapter, prepared_inputs, window, "screen")
        exact = np.concatenate(fast.p_knockout)
        screened = np.concatenate(estimate.p_knockout)
        from ..knockout.calibrate import pearson, ranks

        report.update(screen=estimate, screen_wall_ratio=fast.wall / estimate.wall,
                      screen_cpu_ratio=fast.cpu / estimate.cpu,
                      screen_spearman=pearson(ranks(exact), ranks(screened)))
    return report


# `mapflow bench --shape`: the embedded organism, tiny random models with LLaVA-NeXT-Video-7B's token layout, and the
# full 7B configurations (`mapflow.models.shapes`)
TINY_LAYOUT_SHAPES = {"llava-8x144": 8, "llava-24x144": 24}
BENCH_SHAPES = ("organism", *TINY_LAYOUT_SHAPES, "llava-next-video-7b", "qwen2.5-vl-7b")


@dataclass
class BenchModel:
    adapter: VideoLLMAdapter
    data: object  # benchmark root
    frames: int
    name: str
    notes: str = ""  # what differs from the named model (reduced layers), for the report's first line


def load_bench_model(shape: str, scratch, *, model=None, data=None, frames: int | None = None,
                     layers: int | None = None, vision_layers: int | None = None, dtype: str = "float32",
                     device: str = "cpu", device_map=None, attn: str = "sdpa", seed: int = 0) -> BenchModel:
    """The model a `mapflow bench` run measures: a checkpoint directory (``model``) or a ``shape`` of `BENCH_SHAPES`
    (7B shapes are built in memory on ``device`` / ``device_map`` in ``dtype``; the others load from disk)."""
    from pathlib import Path

    from ..embedded import DEFAULT_DATA_DIR, TINY_BENCH_DIR, default_model_dir
    from ..models import load_model
    from ..models.shapes import SHAPES, build_shape

    if shape not in BENCH_SHAPES:
        raise ValueError(f"unknown bench shape '{shape}'; known: {', '.join(BENCH_SHAPES)}")
    if shape in SHAPES and model is None:
        spec = SHAPES[shape]
        adapter = build_shape(shape, dtype=dtype, device=device, device_map=device_map, text_layers=layers,
                              vision_layers=vision_layers, seed=seed, attn_implementation=attn)
        text, vision = adapter.num_layers, _vision_layers(adapter)
        notes = (f"{spec.checkpoint} configuration, random weights; {text} of {spec.text_layers} decoder layers, "
                 f"{vision} of {spec.vision_layers} vision layers" + (" (reduced)" if (text, vision) != (
                     spec.text_layers, spec.vision_layers) else "") + f"; published tokenizer: {spec.tokenizer}")
        return BenchModel(adapter, Path(data or TINY_BENCH_DIR), frames or 8, shape, notes)
    if model:
        model_dir, root = Path(model), Path(data or DEFAULT_DATA_DIR)
    elif shape in TINY_LAYOUT_SHAPES:
        from ..models.tiny import build_tiny_llava_next_video

        # LLaVA-NeXT-Video-7B's token layout (12x12 pooled tokens per frame, the paper's long prompt) on a tiny
        # random text model: the sequence shape decides how much an exact plan can save
        model_dir = build_tiny_llava_next_video(Path(scratch) / shape, image_size=96, patch_size=4,
                                                num_layers=layers or 32)  # 96 px / 4 / pool 2 = 12x12
        root = Path(data or TINY_BENCH_DIR)
        frames = frames or TINY_LAYOUT_SHAPES[shape]
    else:
        model_dir, root = default_model_dir(), Path(data or DEFAULT_DATA_DIR)
    adapter = load_model(model_dir, attn_implementation=attn, dtype=dtype, device=device, device_map=device_map)
    return BenchModel(adapter, root, frames or 8, model_dir.name)


def _vision_layers(adapter: VideoLLMAdapter) -> int:
    vision = adapter.hf_model.config.vision_config
    return getattr(vision, "num_hidden_layers", None) or vision.depth


def format_report(report: dict, description: str) -> str:
    text = _format_exact(report, description)
    screen = report.get("screen")
    if screen is not None:
        text += (f"\nscreen (first-order estimate, not exact): wall {screen.wall:.2f} s, CPU {screen.cpu:.2f} s -> "
                 f"{report['screen_wall_ratio']:.1f}x wall, {report['screen_cpu_ratio']:.1f}x CPU faster than optimized; "
                 f"Spearman of p_knockout vs optimized over all cells {report['screen_spearman']:.2f}")
    return text


def _format_exact(report: dict, description: str) -> str:
    naive, fast = report["naive"], report["optimized"]
    samples = report["samples"]
    lines = [description,
             f"{samples} sample(s), sequence length {report['seq_len']}, "
             f"{report['configs_per_sample']} (flow, layer) cells each, window {report['window']}"]
    gpu = fast.cuda_peak_mib > 0
    if naive is None:
        lines += [f"{'':24s}{'optimized':>12s}",
                  f"{'wall-clock s':24s}{fast.wall:>12.2f}",
                  f"{'wall-clock s / sample':24s}{fast.wall / samples:>12.2f}",
                  f"{'CPU s':24s}{fast.cpu:>12.2f}",
                  f"{'forwards':24s}{fast.forwards:>12d}", f"{'token-layers computed':24s}{fast.token_layers:>12d}",
                  f"{'peak RSS growth MiB':24s}{fast.memory_mib:>12.0f}"]
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

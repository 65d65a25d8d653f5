"""The measurement behind ``mapflow bench``: the paper's full knockout sweep, naive vs optimized, in one run on the
same machine.

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
from ..inputs.prompts import mcqa_segments, resolve_template
from ..models.base import VideoLLMAdapter
from .engine import KnockoutConfig, clean_state, run_knockouts
from .flows import PAPER_FLOWS, Flow, Window
from .planner import work_of_plan

SWEEP_FLOWS = [f for flows in PAPER_FLOWS.values() for f in flows]
PAPER_WINDOW = Window("center", 9)  # the paper's centred window of 9 layers


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
    from .screen import probability_after, screen_cells, screen_forward

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
            reference = (
                clean.logits[-1]
                if clean is not None
                else run_knockouts(adapter, prepared, [KnockoutConfig(configs[0].blocked, ())], plan="naive")[0]
            )
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


def benchmark(
    adapter: VideoLLMAdapter,
    data_root,
    *,
    limit: int = 2,
    window: Window = PAPER_WINDOW,
    num_frames: int = 8,
    seed: int = 42,
    naive: bool = True,
    screen: bool = False,
    max_samples: int | None = None,
) -> dict:
    """``naive=False`` runs the optimized plan alone (sizes where the naive sweep takes too long: memory checks);
    ``screen`` adds the first-order screen (`mapflow.knockout.screen`) and its speed and agreement against the exact plan;
    ``max_samples`` keeps the first samples only (CPU runs of the 7B shapes)."""
    samples = load_tvbench(data_root, limit=limit, seed=seed)[:max_samples]
    template = resolve_template(None, adapter.prompt_template, "tvbench")  # the checkpoint's own, else the paper's
    prepared_inputs = [
        adapter.prepare(
            _clip(s, num_frames),
            mcqa_segments(s, template),
            option_letters=s.option_letters,
            true_letter=s.answer_letter,
        )
        for s in samples
    ]
    run_phase(adapter, prepared_inputs[:1], window, "auto")  # warm-up: first-call allocations and lazy imports
    slow = run_phase_isolated(adapter, prepared_inputs, window, "naive") if naive else None
    fast = run_phase_isolated(adapter, prepared_inputs, window, "auto")
    report = {
        "samples": len(samples),
        "seq_len": [p.layout.seq_len for p in prepared_inputs],
        "configs_per_sample": len(SWEEP_FLOWS) * adapter.num_layers,
        "window": window.label,
        "naive": slow,
        "optimized": fast,
    }
    if slow is not None:
        report.update(
            max_abs_diff_p_knockout=max(float(np.abs(a - b).max()) for a, b in zip(slow.p_knockout, fast.p_knockout)),
            wall_ratio=slow.wall / fast.wall,
            cpu_ratio=slow.cpu / fast.cpu,
            work_ratio=slow.token_layers / fast.token_layers,
        )
    if screen:
        estimate = run_phase_isolated(adapter, prepared_inputs, window, "screen")
        exact = np.concatenate(fast.p_knockout)
        screened = np.concatenate(estimate.p_knockout)
        from .screen_agreement import pearson, ranks

        report.update(
            screen=estimate,
            screen_wall_ratio=fast.wall / estimate.wall,
            screen_cpu_ratio=fast.cpu / estimate.cpu,
            screen_spearman=pearson(ranks(exact), ranks(screened)),
        )
    return report

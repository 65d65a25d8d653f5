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

from .data import load_tvbench, read_frames
from .engine import KnockoutConfig, clean_state, run_knockouts
from .flows import PAPER_FLOWS, Flow, Window
from .models.base import VideoLLMAdapter
from .planner import entry_layer, plan_batches, plan_packs
from .prompts import mcqa_segments
from .resolve import choose_template

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
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        return self

    def _watch(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        self.cuda_peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0

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
    p_knockout: list = field(default_factory=list)


def sweep_configs(layout, num_layers: int, window: Window) -> list[KnockoutConfig]:
    """Every (flow, layer) cell; like the studies, one blocked matrix per flow shared by its layers."""
    blocked = [torch.from_numpy(Flow.parse(f).block_matrix(layout)) for f in SWEEP_FLOWS]
    return [KnockoutConfig(b, window.layers(layer, num_layers)) for b in blocked for layer in range(num_layers)]


def _work_of_plan(configs, adapter, seq_len) -> tuple[int, int]:
    """Forwards and token-layers the optimized plan computes (clean pass included)."""
    num_layers = adapter.num_layers
    forwards, token_layers = 1, seq_len * num_layers
    live = [c for c in configs if not c.cuts_nothing]
    packed = adapter.suffix_kwargs_broadcast  # as run_knockouts decides
    for group in (plan_packs if packed else plan_batches)(live, adapter, seq_len):
        rows = [live[i] for i in group]
        entries = [entry_layer(c, num_layers) for c in rows]
        starts = [c.first_row for c in rows]
        if not packed:  # every row starts at the batch's first layer and first row
            entries, starts = [min(entries)] * len(rows), [min(starts)] * len(rows)
        forwards += 1
        token_layers += sum((seq_len - start) * (num_layers - entry) for start, entry in zip(starts, entries))
    return forwards, token_layers


def run_phase(adapter: VideoLLMAdapter, prepared_inputs, window: Window, plan: str) -> PhaseResult:
    result = PhaseResult()
    with PeakMemory() as memory:
        wall, cpu = time.perf_counter(), time.process_time()
        for prepared in prepared_inputs:
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
    for prepared in prepared_inputs:  # bookkeeping, outside the timed region
        configs = sweep_configs(prepared.layout, adapter.num_layers, window)
        seq_len = prepared.layout.seq_len
        if plan == "auto":
            forwards, token_layers = _work_of_plan(configs, adapter, seq_len)
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
    """`run_phase` in a forked child (same loaded model, fresh heap), or in this process where fork is missing."""
    if "fork" not in multiprocessing.get_all_start_methods():
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
              num_frames: int = 8, seed: int = 42, naive: bool = True) -> dict:
    """``naive=False`` runs the optimized plan alone (sizes where the naive sweep takes too long: memory checks)."""
    samples = load_tvbench(data_root, limit=limit, seed=seed)
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
    return report


def format_report(report: dict, description: str) -> str:
    naive, fast = report["naive"], report["optimized"]
    lines = [description,
             f"{report['samples']} sample(s), sequence length {report['seq_len']}, "
             f"{report['configs_per_sample']} (flow, layer) cells each, window {report['window']}"]
    if naive is None:
        lines += [f"{'':24s}{'optimized':>12s}",
                  f"{'wall-clock s':24s}{fast.wall:>12.2f}", f"{'CPU s':24s}{fast.cpu:>12.2f}",
                  f"{'forwards':24s}{fast.forwards:>12d}", f"{'token-layers computed':24s}{fast.token_layers:>12d}",
                  f"{'peak RSS growth MiB':24s}{fast.memory_mib:>12.0f}", "(naive phase skipped)"]
        return "\n".join(lines)
    rows = [
        ("wall-clock s", f"{naive.wall:.2f}", f"{fast.wall:.2f}", f"{report['wall_ratio']:.1f}x"),
        ("CPU s", f"{naive.cpu:.2f}", f"{fast.cpu:.2f}", f"{report['cpu_ratio']:.1f}x"),
        ("forwards", str(naive.forwards), str(fast.forwards), f"{naive.forwards / fast.forwards:.1f}x"),
        ("token-layers computed", str(naive.token_layers), str(fast.token_layers), f"{report['work_ratio']:.1f}x"),
        ("peak RSS growth MiB", f"{naive.memory_mib:.0f}", f"{fast.memory_mib:.0f}", ""),
    ]
    lines.append(f"{'':24s}{'naive':>12s}{'optimized':>12s}{'ratio':>10s}")
    lines += [f"{name:24s}{a:>12s}{b:>12s}{r:>10s}" for name, a, b, r in rows]
    lines.append(f"max |delta p_knockout| naive vs optimized: {report['max_abs_diff_p_knockout']:.2e}")
    return "\n".join(lines)

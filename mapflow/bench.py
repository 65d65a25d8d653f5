"""``mapflow bench``: the paper's full knockout sweep, naive vs optimized, in one run on the same machine.

Both plans run every (flow, layer) cell of the 11 paper flows on the same samples. Reported: wall-clock and CPU time
with their ratios, forwards and token-layers computed, peak resident memory growth of each phase, and the largest
difference in ``p_knockout`` between the two.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import psutil
import torch

from .data import load_tvbench, read_frames
from .engine import KnockoutConfig, clean_state, entry_layer, plan_batches, run_knockouts
from .flows import PAPER_FLOWS, Flow, Window
from .models.base import VideoLLMAdapter
from .prompts import mcqa_segments, resolve_template

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
    for batch in plan_batches(live, adapter, seq_len):
        rows = [live[i] for i in batch]
        entries = [entry_layer(c, num_layers) for c in rows]
        if not adapter.suffix_kwargs_broadcast:  # every row starts at the batch's first layer
            entries = [min(entries)] * len(entries)
        start = min(c.first_row for c in rows)
        forwards += 1
        token_layers += sum((seq_len - start) * (num_layers - entry) for entry in entries)
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


def benchmark(adapter: VideoLLMAdapter, data_root, *, limit: int = 2, window: Window = Window("center", 9),
              num_frames: int = 8, seed: int = 42) -> dict:
    samples = load_tvbench(data_root, limit=limit, seed=seed)
    template = resolve_template(None, adapter.prompt_template, "tvbench")
    prepared_inputs = [adapter.prepare(read_frames(s, num_frames=num_frames).frames,
                                       mcqa_segments(s, template), option_letters=s.option_letters,
                                       true_letter=s.answer_letter) for s in samples]
    run_phase(adapter, prepared_inputs[:1], window, "auto")  # warm-up: first-call allocations and lazy imports
    naive = run_phase(adapter, prepared_inputs, window, "naive")
    fast = run_phase(adapter, prepared_inputs, window, "auto")
    diff = max(float(np.abs(a - b).max()) for a, b in zip(naive.p_knockout, fast.p_knockout))
    return {
        "samples": len(samples), "seq_len": [p.layout.seq_len for p in prepared_inputs],
        "configs_per_sample": len(SWEEP_FLOWS) * adapter.num_layers, "window": window.label,
        "naive": naive, "optimized": fast, "max_abs_diff_p_knockout": diff,
        "wall_ratio": naive.wall / fast.wall, "cpu_ratio": naive.cpu / fast.cpu,
        "work_ratio": naive.token_layers / fast.token_layers,
    }


def format_report(report: dict, description: str) -> str:
    naive, fast = report["naive"], report["optimized"]
    rows = [
        ("wall-clock s", f"{naive.wall:.2f}", f"{fast.wall:.2f}", f"{report['wall_ratio']:.1f}x"),
        ("CPU s", f"{naive.cpu:.2f}", f"{fast.cpu:.2f}", f"{report['cpu_ratio']:.1f}x"),
        ("forwards", str(naive.forwards), str(fast.forwards), f"{naive.forwards / fast.forwards:.1f}x"),
        ("token-layers computed", str(naive.token_layers), str(fast.token_layers), f"{report['work_ratio']:.1f}x"),
        ("peak RSS growth MiB", f"{naive.memory_mib:.0f}", f"{fast.memory_mib:.0f}", ""),
    ]
    lines = [description,
             f"{report['samples']} sample(s), sequence length {report['seq_len']}, "
             f"{report['configs_per_sample']} (flow, layer) cells each, window {report['window']}",
             f"{'':24s}{'naive':>12s}{'optimized':>12s}{'ratio':>10s}"]
    lines += [f"{name:24s}{a:>12s}{b:>12s}{r:>10s}" for name, a, b, r in rows]
    lines.append(f"max |delta p_knockout| naive vs optimized: {report['max_abs_diff_p_knockout']:.2e}")
    return "\n".join(lines)

"""What ``mapflow ndif bench`` measures (its command line: `mapflow.cli.ndif_server`): one study over the same samples
locally and on an NDIF server, per sample and per request.

Per sample: requests sent, request bytes, result bytes, wall time locally (the fast plan) and remotely (the sample
plan, and with ``--trace-plan`` the per-trace naive plan too), the remote/local ratio, and the largest difference in
any probability between the two runs. With ``--concurrency N`` the remote samples are also run N at a time, and
that sweep's total wall time is reported; with ``--remote-batch B`` that sweep sends B samples per request (N
requests in flight), and its wall time and max |dp| against the local run are reported. Timings are in-process
(model loading and imports excluded).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

PROBABILITIES = ("p_base", "p_gt_base", "p_knockout", "p_gt_knockout")


def max_abs_difference(a, b) -> float:
    return max(
        float(np.nanmax(np.abs(a[name].values - b[name].values), initial=0.0)) for name in PROBABILITIES if name in a
    )


def _timed(measure, sample, stats=None):
    before = stats.snapshot() if stats is not None else None
    start = time.perf_counter()
    result = measure(sample)
    wall = time.perf_counter() - start
    counts = {k: v - before[k] for k, v in stats.snapshot().items()} if stats is not None else {}
    return result, wall, counts


def bench(
    study, adapter, samples, config, settings, *, trace_plan: bool = False, concurrency: int = 1, batch: int = 1
) -> dict:
    from ..analysis.inflight import in_order
    from ..analysis.runner import measure_sample
    from ..backends import LocalBackend, NDIFBackend

    rows = []

    def on(backend):
        """``measure(sample)`` through ``backend``, prepared as a run prepares it."""
        view, prepared_config = backend.prepare(study, adapter, config)
        return lambda sample: measure_sample(study, view, sample, prepared_config, "bench", backend)

    local = on(LocalBackend())
    remote_backend = NDIFBackend(settings, concurrency=1, batch=1)  # the per-sample rows: one request each
    remote = on(remote_backend)
    if trace_plan:
        trace_backend = NDIFBackend(replace(settings, plan="trace"), concurrency=1, batch=1)
        naive = on(trace_backend)
    expected_of = {}
    for sample in samples:
        expected, local_wall, _ = _timed(local, sample)
        expected_of[sample.sample_id] = expected
        got, remote_wall, counts = _timed(remote, sample, remote_backend.stats)
        row = {
            "sample": sample.sample_id,
            **counts,
            "local_s": local_wall,
            "remote_s": remote_wall,
            "ratio": remote_wall / local_wall,
            "max_dp": max_abs_difference(got, expected),
        }
        if trace_plan:
            per_trace, naive_wall, naive_counts = _timed(naive, sample, trace_backend.stats)
            row.update(
                trace_requests=naive_counts["requests"],
                trace_bytes_sent=naive_counts["bytes_sent"],
                trace_s=naive_wall,
                trace_max_dp=max_abs_difference(got, per_trace),
            )
        rows.append(row)
    report = {"rows": rows}
    if concurrency > 1 or batch > 1:
        swept_backend = NDIFBackend(settings, concurrency=concurrency, batch=batch)
        swept = on(swept_backend)
        start, max_dp = time.perf_counter(), 0.0
        for sample, outcome in in_order(samples, swept, swept_backend.concurrency, catch=()):
            max_dp = max(max_dp, max_abs_difference(outcome, expected_of[sample.sample_id]))
        report["concurrent"] = {
            "concurrency": concurrency,
            "batch": batch,
            "wall_s": time.perf_counter() - start,
            "sequential_wall_s": sum(r["remote_s"] for r in rows),
            "local_wall_s": sum(r["local_s"] for r in rows),
            "samples": len(samples),
            "requests": swept_backend.stats.snapshot()["requests"],
            "max_dp": max_dp,
        }
    return report


def format_report(report: dict) -> str:
    trace = "trace_s" in report["rows"][0] if report["rows"] else False
    head = (
        f"{'sample':<28}{'req':>5}{'sent KiB':>10}{'recv KiB':>10}{'local s':>9}{'remote s':>10}{'ratio':>7}"
        f"{'max|dp|':>10}"
    )
    if trace:
        head += f"{'naive req':>10}{'naive KiB':>11}{'naive s':>9}{'naive|dp|':>11}"
    lines = [head]
    for r in report["rows"]:
        line = (
            f"{r['sample']:<28}{r['requests']:>5}{r['bytes_sent'] / 1024:>10.1f}{r['bytes_received'] / 1024:>10.1f}"
            f"{r['local_s']:>9.2f}{r['remote_s']:>10.2f}{r['ratio']:>7.2f}{r['max_dp']:>10.1e}"
        )
        if trace:
            line += (
                f"{r['trace_requests']:>10}{r['trace_bytes_sent'] / 1024:>11.1f}{r['trace_s']:>9.2f}"
                f"{r['trace_max_dp']:>11.1e}"
            )
        lines.append(line)
    rows = report["rows"]
    if rows:
        total_local, total_remote = sum(r["local_s"] for r in rows), sum(r["remote_s"] for r in rows)
        lines.append(
            f"{'total':<28}{sum(r['requests'] for r in rows):>5}"
            f"{sum(r['bytes_sent'] for r in rows) / 1024:>10.1f}"
            f"{sum(r['bytes_received'] for r in rows) / 1024:>10.1f}{total_local:>9.2f}{total_remote:>10.2f}"
            f"{total_remote / total_local:>7.2f}{max(r['max_dp'] for r in rows):>10.1e}"
        )
    if "concurrent" in report:
        c = report["concurrent"]
        lines.append(
            f"remote, {c['concurrency']} request(s) in flight, {c['batch']} sample(s) per request: "
            f"{c['wall_s']:.2f} s for the sweep, {c['requests']} requests "
            f"(one at a time: {c['sequential_wall_s']:.2f} s, {c['sequential_wall_s'] / c['wall_s']:.2f}x); "
            f"per sample {c['wall_s'] / c['samples']:.2f} s = {c['wall_s'] / c['local_wall_s']:.2f}x local, "
            f"max|dp| {c['max_dp']:.1e}"
        )
    return "\n".join(lines)

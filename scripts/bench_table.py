"""Markdown rows for docs/measurements.md ("Real scale") from `mapflow bench --json` files: python scripts/bench_table.py A.json ..."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def row(report: dict) -> str:
    naive, fast = report["naive"], report["optimized"]
    samples = report["samples"]
    weights = report["weights_mib"]
    gpu = fast["cuda_peak_mib"] > 0
    peak = (
        f"{fast['cuda_peak_mib']:.0f} MiB ({fast['cuda_peak_mib'] / weights:.2f}x weights)"
        if gpu
        else f"+{fast['memory_mib']:.0f} MiB RSS"
    )
    naive_s = f"{naive['wall'] / samples:.2f} / {naive['cpu'] / samples:.2f}" if naive else "skipped"
    ratio = f"{report['wall_ratio']:.1f}x (CPU time {report['cpu_ratio']:.1f}x)" if naive else "-"
    delta = f"{report['max_abs_diff_p_knockout']:.1e}" if naive else "-"
    return (
        f"| {report['shape']} | {report['layers']} | {report['frames']} ({max(report['seq_len'])} tokens) | "
        f"{report['dtype']} | {naive_s} | {fast['wall'] / samples:.2f} / {fast['cpu'] / samples:.2f} | {ratio} | {peak} "
        f"| {delta} |"
    )


HEADER = (
    "| shape | decoder layers | frames | dtype | naive s/sample (wall / CPU) | fast s/sample (wall / CPU) "
    "| speed-up (wall) | peak memory (fast) | max \\|Δp\\| |\n|---|---|---|---|---|---|---|---|---|"
)

if __name__ == "__main__":
    print(HEADER)
    for path in sys.argv[1:]:
        print(row(json.loads(Path(path).read_text())))

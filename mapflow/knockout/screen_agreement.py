"""The agreement of the first-order screen (`mapflow.knockout.screen`) with the exact engine on the same samples
(what `mapflow calibrate STUDY` prints). This module holds the agreement measures, the exact engine's work counter
and the report; running a study both ways on samples is `mapflow.analysis.calibration.calibrate` (the study layer).

Per flow, over every (sample, layer, ...) cell both methods measured: Spearman and Pearson correlation of
``rel_change``, recall of the exact top-5 most harmful cells among the screen's top 5, sign agreement (cells whose
exact change is at least `SIGN_MIN_CHANGE` %), and the cost of each method: wall-clock seconds and language-model
forward-equivalents (exact: the token-layers the fast engine computes / (sequence x layers), clean pass included;
screen: one forward plus one backward per distinct metric token, counted as two forwards; its attention-row
recomputation is not counted, the wall-clock ratio includes it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

TOP_K = 5
SIGN_MIN_CHANGE = 0.1  # % : below this the exact change's sign is float noise on a confident model


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties sharing their mean rank (as Spearman's coefficient needs)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    rank = np.empty(len(values))
    start = 0
    for stop in range(1, len(values) + 1):
        if stop == len(values) or sorted_values[stop] != sorted_values[start]:
            rank[order[start:stop]] = (start + stop - 1) / 2
            start = stop
    return rank


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def cell_metrics(exact: np.ndarray, screen: np.ndarray, k: int = TOP_K) -> dict:
    """Agreement of two flat arrays of rel_change cells (NaN cells dropped)."""
    keep = np.isfinite(exact) & np.isfinite(screen)
    exact, screen = exact[keep], screen[keep]
    top = min(k, len(exact))
    harmful = set(np.argsort(exact, kind="stable")[:top])
    flagged = set(np.argsort(screen, kind="stable")[:top])
    signed = np.abs(exact) >= SIGN_MIN_CHANGE
    return {
        "cells": int(len(exact)),
        "spearman": pearson(ranks(exact), ranks(screen)),
        "pearson": pearson(exact, screen),
        f"top{k}_recall": len(harmful & flagged) / top if top else float("nan"),
        "sign_agreement": float(np.mean(np.sign(exact[signed]) == np.sign(screen[signed])))
        if signed.any()
        else float("nan"),
        "sign_cells": int(signed.sum()),
        "mean_abs_exact": float(np.abs(exact).mean()) if len(exact) else float("nan"),
    }


def agreement(exact: xr.Dataset, screen: xr.Dataset, variable: str = "rel_change") -> dict[str, dict]:
    """`cell_metrics` per flow (one group ``all`` for studies without a flow axis)."""
    a, b = exact[variable], screen[variable]
    if "flow" not in a.dims:
        return {"all": cell_metrics(a.values.ravel(), b.transpose(*a.dims).values.ravel())}
    return {
        str(flow): cell_metrics(
            a.sel(flow=flow).values.ravel(), b.sel(flow=flow).transpose(*a.sel(flow=flow).dims).values.ravel()
        )
        for flow in a["flow"].values
    }


class WorkCounter:
    """Counts the fast engine's work while the exact run goes (the planner's own accounting, `work_of_plan`)."""

    def __init__(self):
        self.forward_equivalents = 0.0

    def __enter__(self):
        from . import cells
        from .planner import work_of_plan

        self._original = original = cells.run_knockouts

        def counted(adapter, prepared, configs, **kwargs):
            seq_len = prepared.layout.seq_len
            _, token_layers = work_of_plan(configs, adapter, seq_len)
            self.forward_equivalents += token_layers / (seq_len * adapter.num_layers)
            return original(adapter, prepared, configs, **kwargs)

        cells.run_knockouts = counted
        return self

    def __exit__(self, *exc):
        from . import cells

        cells.run_knockouts = self._original


def format_calibration(report: dict, markdown: bool = False) -> str:
    head = ("flow", "cells", "Spearman", "Pearson", f"top-{TOP_K} recall", "sign agree", "mean abs exact %")
    rows = [
        (
            flow,
            str(m["cells"]),
            f"{m['spearman']:.2f}",
            f"{m['pearson']:.2f}",
            f"{m[f'top{TOP_K}_recall']:.2f}",
            f"{m['sign_agreement']:.2f} ({m['sign_cells']})",
            f"{m['mean_abs_exact']:.2f}",
        )
        for flow, m in report["flows"].items()
    ]
    cost = report["cost"]
    title = (
        f"calibration of the screen: {report['study']} on {report['model']}, {report['samples']} sample(s) "
        f"({report['knocked_out_samples']} knocked out), window {report['window']}, "
        f"metric {report['screen_metric']}"
    )
    footer = (
        f"cost: exact {cost['exact_wall_s']:.2f} s / {cost['exact_forward_equivalents']:.1f} forward-eq., "
        f"screen {cost['screen_wall_s']:.2f} s / {cost['screen_forward_equivalents']} forward-eq. -> "
        f"{cost['wall_ratio']:.1f}x wall, {cost['forward_ratio']:.1f}x forward-equivalents"
    )
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join([title, "", *lines, "", footer])
    width = max(len(r[0]) for r in rows + [head]) + 2
    lines = [title, head[0].ljust(width) + "".join(h.rjust(16) for h in head[1:])]
    lines += [r[0].ljust(width) + "".join(c.rjust(16) for c in r[1:]) for r in rows]
    return "\n".join(lines + [footer])


def write_calibration(report: dict, out_dir) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"calibration-{report['study']}.json"
    path.write_text(json.dumps(report, indent=2, default=float))
    return path

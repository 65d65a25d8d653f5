"""The prune-eval figure and table: accuracy against prefill FLOPs, one curve per method.

`prune_figure(ds)`: two panels (accuracy; agreement with the unpruned answer) against the mean prefill FLOPs as a
share of the unpruned model's; FastV-style pruning one curve per K (its R sweep), the pathway plan a star, the
unpruned model a reference line with a band of ±1 point. `prune_table(ds)`: one row per method
(`mapflow.pruning.summary.method_table`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..pruning.summary import TOLERANCE_POINTS, check_prune_store, method_table, pick, strings


def prune_table(ds: xr.Dataset) -> pd.DataFrame:
    """One row per method: accuracy, agreement, FLOPs, wall time (`mapflow.pruning.summary.method_table`)."""
    return method_table(ds)


def prune_figure(ds: xr.Dataset, *, tolerance: float = TOLERANCE_POINTS) -> Figure:
    check_prune_store(ds)
    flops = ds["flops"].astype(float).mean("sample")
    share = 100 * flops / float(pick(flops, "unpruned"))
    kinds = strings(ds["kind"])
    ks = np.asarray(ds["K"].values, dtype=int)
    fig = Figure(figsize=(12, 4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for ax, variable, title in (
        (axes[0], "correct", "accuracy (%)"),
        (axes[1], "agrees", "agreement with the unpruned answer (%)"),
    ):
        value = 100 * ds[variable].astype(float).mean("sample")
        base = float(pick(value, "unpruned"))
        ax.axhline(base, color="black", linestyle="--", linewidth=1, label="unpruned")
        ax.axhspan(base - tolerance, base + tolerance, color="0.85", alpha=0.6, linewidth=0)
        for k in sorted(set(ks[kinds == "fastv"])):
            chosen = (kinds == "fastv") & (ks == k)
            x, y = share.values[chosen], value.values[chosen]
            order = np.argsort(x)
            ax.plot(x[order], y[order], marker="o", markersize=4, label=f"FastV K={k} (R swept)")
        for kind, marker, color, name in (
            ("pathway", "*", "tab:red", "pathway plan"),
            ("pathway_drop_only", "P", "tab:purple", "plan without frame-local"),
        ):
            for method in np.flatnonzero(kinds == kind):
                ax.plot(
                    float(share.isel(pruning=method)),
                    float(value.isel(pruning=method)),
                    marker=marker,
                    markersize=14 if marker == "*" else 9,
                    color=color,
                    linestyle="none",
                    label=f"{name}: {ds['label'].values[method]}",
                )
        ax.set_xlabel("prefill FLOPs (% of unpruned, language model)")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize="small", loc="outside right center")
    model = str(ds["model"].values) if "model" in ds.coords else ""
    fig.suptitle(f"Pruning {model}: {ds.sizes['sample']} samples (band: unpruned \u00b1{tolerance:g} point)")
    return fig

"""Paper-style line plots of knockout effects per layer, with bootstrap confidence bands."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..errors import MapflowError

SAMPLE_DIM = "sample"


def mean_and_ci(
    values: np.ndarray, ci: float = 0.95, n_boot: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over axis 0 and its percentile-bootstrap confidence interval.

    `values` has shape (samples, ...). NaNs are left out separately for every
    cell of the trailing dims. Returns (mean, low, high), each of shape
    values.shape[1:]; all NaN where a cell has no finite value.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim == 0:
        raise ValueError("values needs a leading samples axis")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be between 0 and 1, got {ci}")
    rng = np.random.default_rng(seed)
    cells = values.reshape(values.shape[0], -1)
    tail = 100 * (1 - ci) / 2
    mean, low, high = (np.full(cells.shape[1], np.nan) for _ in range(3))
    for cell in range(cells.shape[1]):
        finite = cells[:, cell][np.isfinite(cells[:, cell])]
        if finite.size == 0:
            continue
        draws = rng.integers(0, finite.size, size=(n_boot, finite.size))
        boot_means = finite[draws].mean(axis=1)
        mean[cell] = finite.mean()
        low[cell], high[cell] = np.percentile(boot_means, [tail, 100 - tail])
    trailing = values.shape[1:]
    return mean.reshape(trailing), low.reshape(trailing), high.reshape(trailing)


def rel_change_figure(
    ds: xr.Dataset, *, variable: str = "rel_change", ci: float = 0.95, n_boot: int = 1000, seed: int = 0
) -> Figure:
    """One panel per task: mean `variable` (already in %) per layer, one line per flow."""
    data = _variable_by_sample_flow_layer(ds, variable)
    if not np.isfinite(data.values).any():
        raise MapflowError(f"'{variable}' has no finite values to plot (every sample is NaN?)")
    tasks = _task_labels(data)
    # A bare Agg figure, not pyplot: no global backend switch, nothing to close.
    fig = Figure(figsize=(5 * len(tasks), 4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(tasks), squeeze=False, sharey=True)
    for ax, task in zip(axes[0], tasks):
        in_task = data if task is None else data.isel({SAMPLE_DIM: data["task"].values == task})
        _draw_panel(ax, in_task, variable, ci, n_boot, seed)
        ax.set_title(f"{task or 'all samples'} (n={in_task.sizes[SAMPLE_DIM]} samples)")
    axes[0][0].set_ylabel(f"mean {variable} (%)")
    return fig


def plot_rel_change(
    ds: xr.Dataset,
    out_path: str | os.PathLike,
    *,
    variable: str = "rel_change",
    ci: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
) -> Path:
    """Save `rel_change_figure` as a PNG and return its path."""
    fig = rel_change_figure(ds, variable=variable, ci=ci, n_boot=n_boot, seed=seed)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, format="png", dpi=150)
    return out_path


def _variable_by_sample_flow_layer(ds: xr.Dataset, variable: str) -> xr.DataArray:
    if variable not in ds:
        raise MapflowError(f"dataset has no variable '{variable}' (has: {', '.join(map(str, ds.data_vars))})")
    data = ds[variable]
    if "flow" not in data.dims:
        data = data.expand_dims(flow=[variable])
    if set(data.dims) != {SAMPLE_DIM, "flow", "layer"}:
        raise MapflowError(f"'{variable}' must have dims (sample, flow, layer) to plot, got {data.dims}")
    return data.transpose(SAMPLE_DIM, "flow", "layer")


def _task_labels(data: xr.DataArray) -> list[str | None]:
    if "task" not in data.coords:
        return [None]
    return sorted({str(task) for task in data["task"].values})


def _draw_panel(ax, data: xr.DataArray, variable: str, ci: float, n_boot: int, seed: int) -> None:
    mean, low, high = mean_and_ci(data.values, ci=ci, n_boot=n_boot, seed=seed)
    x = data["layer"].values + 1  # the paper numbers layers from 1
    for i, flow in enumerate(data["flow"].values):
        (line,) = ax.plot(x, mean[i], marker="o", markersize=3, label=str(flow))
        ax.fill_between(x, low[i], high[i], color=line.get_color(), alpha=0.2, linewidth=0)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("layer (1-based)")
    ax.legend(title=f"{variable}, {ci:.0%} CI", fontsize="small")
    ax.grid(alpha=0.3)

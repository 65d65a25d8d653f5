"""The stored form of a sample's knockout measurement: the Dataset `StudyContext.sweep` and `.knockout` return, and
`StudyContext.stack` for several measurements of one sample."""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..knockout.flows import Window
from .clean import CleanRun


def knockout_dataset(
    flows, layer_sets, dim, labels, p_new, p_gt_new, pred_new, clean: CleanRun | None, run_it: bool, accepted=()
) -> xr.Dataset:
    """The stored form of a knockout measurement; ``clean=None`` gives the all-NaN cells of an unmeasured input.
    ``correct_knockout``: the knocked-out prediction passes the run's correctness rule (``accepted`` ids), False in
    cells that were not measured (``pred_knockout`` -1)."""
    cell = ("flow", dim)
    blocked_layers = [",".join(str(i) for i in layers) for layers in layer_sets]
    p_base = np.nan if clean is None else clean.p_base
    p_gt_base = np.nan if clean is None else clean.p_gt_base
    return xr.Dataset(
        data_vars={
            "p_knockout": (cell, p_new),
            "rel_change": (cell, relative_change(p_new, p_base)),
            "p_gt_knockout": (cell, p_gt_new),
            "rel_change_gt": (
                cell,
                relative_change(p_gt_new, p_gt_base) if p_gt_base > 0 else np.full_like(p_gt_new, np.nan),
            ),
            "pred_knockout": (cell, pred_new),
            "correct_knockout": (cell, np.isin(pred_new, np.asarray(accepted, dtype=np.int64)) & (pred_new >= 0)),
            "p_base": ((), p_base),
            "p_gt_base": ((), p_gt_base),
            "pred_base": ((), np.int64(-1 if clean is None else clean.pred)),
            "answer_token": ((), np.int64(-1 if clean is None else clean.gt_token)),
            **(
                clean.correctness()
                if clean is not None
                else {name: ((), False) for name in ("correct", "correct_token", "correct_text")}
            ),
            "knocked_out": ((), run_it),
        },
        coords={
            "flow": [f.label for f in flows],
            dim: labels,
            "blocked_layers": (dim, np.asarray(blocked_layers, dtype=object)),
        },
    )


def stack_results(results: list[xr.Dataset], dim: str, labels) -> xr.Dataset:
    """Several measurements of one sample along a new ``dim``: variables with dimensions are stacked, per-sample
    scalars (clean-run values, the same in each) are kept once. Deciding by dimensions, not by equality, keeps the
    stored dims the same on every sample (an unmeasured sample's NaN cells are all equal)."""
    stacked = [name for name, var in results[0].data_vars.items() if var.dims]
    return xr.concat(results, dim=dim, data_vars=stacked, coords="different", compat="equals").assign_coords(
        {dim: list(labels)}
    )


def with_window_labels(ds: xr.Dataset, window: Window) -> xr.Dataset:
    """A sweep's ``window`` coordinate (its size, -1 for styles without one) and style attributes."""
    ds = ds.assign_coords(window=window.size if window.style in ("center", "inverse") else -1)
    ds.attrs.update(window_style=window.style, window_label=window.label)
    return ds


def relative_change(new, base) -> np.ndarray:
    """``(p_knockout - p_base) / p_base * 100``: the paper's %p_change."""
    return (np.asarray(new) - base) / base * 100.0

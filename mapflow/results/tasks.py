"""The per-task split of a result store: every table, figure and accuracy summary slices samples by task here."""

from __future__ import annotations

import numpy as np
import xarray as xr


def task_names(data: xr.Dataset | xr.DataArray) -> list[str]:
    """The tasks of ``data``'s samples (its ``task`` coordinate), sorted."""
    return sorted({str(t) for t in data["task"].values})


def select_task(data: xr.Dataset | xr.DataArray, task: str):
    """The samples of ``data`` from ``task``, in store order."""
    return data.isel(sample=np.asarray([str(t) for t in data["task"].values]) == task)


def by_task(data: xr.Dataset | xr.DataArray, *, overall: str | None = "all"):
    """(task, samples of that task) for every task, then (``overall``, everything) unless ``overall`` is None."""
    for task in task_names(data):
        yield task, select_task(data, task)
    if overall is not None:
        yield overall, data

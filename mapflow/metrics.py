"""Summaries read from result stores."""

from __future__ import annotations

import numpy as np
import xarray as xr


def accuracy_by_task(correct: xr.DataArray) -> dict[str, float]:
    """Accuracy in % per task (``task`` coord on ``sample``), plus ``micro`` (all samples) and ``macro`` (mean of
    tasks)."""
    values = np.asarray(correct.values, dtype=float)
    tasks = np.asarray([str(t) for t in correct.task.values])
    table = {task: 100 * float(values[tasks == task].mean()) for task in sorted(set(tasks.tolist()))}
    per_task = list(table.values())
    table["micro"] = 100 * float(values.mean())
    table["macro"] = float(np.mean(per_task))
    return table

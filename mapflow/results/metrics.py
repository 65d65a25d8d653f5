"""Summaries read from result stores (accuracy per task, correctness after knockout)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from .tasks import by_task


def accuracy_by_task(correct: xr.DataArray) -> dict[str, float]:
    """Accuracy in % per task (``task`` coord on ``sample``), plus ``micro`` (all samples) and ``macro`` (mean of
    tasks)."""
    values = np.asarray(correct.values, dtype=float)
    table = {
        task: 100 * float(np.asarray(part.values, dtype=float).mean()) for task, part in by_task(correct, overall=None)
    }
    per_task = list(table.values())
    table["micro"] = 100 * float(values.mean())
    table["macro"] = float(np.mean(per_task))
    return table


def correct_after_knockout(ds: xr.Dataset) -> xr.DataArray:
    """Whether each knocked-out prediction is right, by the run's correctness rule (``correct_knockout``); stores
    written before it was stored fall back to comparing token ids."""
    if "correct_knockout" in ds:
        return ds["correct_knockout"]
    return ds["pred_knockout"] == ds["answer_token"]


def correctness_disagreements(ds: xr.Dataset) -> int:
    """How many samples the two correctness rules disagree on: the released code's decoded, case-insensitive
    comparison (``correct_text``) and the token-id comparison (``correct_token``)."""
    missing = [name for name in ("correct_text", "correct_token") if name not in ds]
    if missing:
        from ..errors import MapflowError

        raise MapflowError(
            f"this store has no {', '.join(missing)}: it was written before both correctness rules "
            "were stored; rerun the study to count their disagreements"
        )
    text = np.asarray(ds["correct_text"].values, dtype=bool)
    token = np.asarray(ds["correct_token"].values, dtype=bool)
    return int((text != token).sum())

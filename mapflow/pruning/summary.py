"""What a prune-eval store says: per method accuracy, agreement, FLOPs and time; FastV at the plan's FLOPs; the
verdict (does the plan keep the unpruned accuracy within a tolerance at the lowest FLOPs?).

Reads the dataset `mapflow.pruning.evaluate.prune_eval` writes: dims ``(sample, pruning)``, coords ``kind``
(unpruned / pathway / fastv), ``K``, ``R``, ``label`` on the ``pruning`` dim (one entry per method).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import MapflowError
from ..results.metrics import accuracy_by_task

TOLERANCE_POINTS = 1.0  # issue 27: the plan should reach the unpruned accuracy within 1 point
REQUIRED = ("correct", "agrees", "flops", "wall_s", "kind", "K", "R", "label")


def check_prune_store(ds: xr.Dataset, where: str = "the dataset") -> None:
    missing = [name for name in REQUIRED if name not in ds.variables]
    if missing or "pruning" not in ds.dims:
        raise MapflowError(
            f"{where} is not a prune-eval store (missing {', '.join(missing) or 'the pruning dim'}); "
            "write one with `mapflow prune-eval`"
        )
    if "unpruned" not in [str(m) for m in ds["pruning"].values]:
        raise MapflowError(f"{where} has no 'unpruned' method: the reference every comparison needs")


def strings(data) -> np.ndarray:
    """A stored string coordinate as a plain numpy str array (stores give numpy's StringDType)."""
    return np.asarray([str(v) for v in np.asarray(data.values).ravel()])


def pick(data, method: str):
    """``data`` at one method, by name, with an error that lists the methods the store has."""
    names = list(strings(data["pruning"]))
    if method not in names:
        raise MapflowError(f"the prune-eval store has no method '{method}' (methods: {', '.join(names)})")
    return data.sel(pruning=method)


def _flops_unit(value: float) -> tuple[str, float]:
    for unit, scale in (("TFLOPs", 1e12), ("GFLOPs", 1e9), ("MFLOPs", 1e6)):
        if value >= scale:
            return unit, scale
    return "FLOPs", 1.0


def method_table(ds: xr.Dataset) -> pd.DataFrame:
    """One row per method: accuracy (micro, %, and per task), agreement with the unpruned answer (%), mean prefill
    FLOPs (and % of the unpruned), mean wall time (ms), tokens left after the drop."""
    check_prune_store(ds)
    base_flops = float(pick(ds["flops"], "unpruned").mean())
    unit, scale = _flops_unit(base_flops)
    rows = []
    for index in range(ds.sizes["pruning"]):
        part = ds.isel(pruning=index)
        accuracy = accuracy_by_task(part["correct"])
        row = {
            "pruning": str(part["pruning"].values),
            "label": str(part["label"].values),
            "K": int(part["K"]),
            "R %": round(100 * float(part["R"]), 1),
            "accuracy %": accuracy["micro"],
            "agreement %": 100 * float(np.mean(part["agrees"].values)),
            f"prefill {unit}": float(part["flops"].mean()) / scale,
            "FLOPs % of unpruned": 100 * float(part["flops"].mean()) / base_flops,
            "wall ms": 1000 * float(part["wall_s"].mean()),
        }
        if "tokens_after" in ds:
            row["tokens after drop"] = float(part["tokens_after"].mean())
        row.update({f"acc {task} %": value for task, value in accuracy.items() if task not in ("micro", "macro")})
        rows.append(row)
    return pd.DataFrame(rows).set_index("pruning")


def fastv_at_plan_flops(ds: xr.Dataset, plan_method: str = "pathway") -> dict[int, float | None]:
    """Each FastV K's accuracy (%) linearly interpolated at the plan's mean FLOPs along its R sweep (None where the
    sweep does not bracket them)."""
    check_prune_store(ds)
    flops = ds["flops"].mean("sample")
    accuracy = 100 * ds["correct"].astype(float).mean("sample")
    target = float(pick(flops, plan_method))
    out = {}
    kinds = strings(ds["kind"])
    for k in sorted({int(k) for k, kind in zip(ds["K"].values, kinds) if kind == "fastv"}):
        chosen = (kinds == "fastv") & (np.asarray(ds["K"].values) == k)
        x = np.asarray(flops.values[chosen], dtype=float)
        y = np.asarray(accuracy.values[chosen], dtype=float)
        order = np.argsort(x)
        x, y = x[order], y[order]
        out[k] = float(np.interp(target, x, y)) if x.size and x[0] <= target <= x[-1] else None
    return out


def verdict(ds: xr.Dataset, *, plan_method: str = "pathway", tolerance: float = TOLERANCE_POINTS) -> dict:
    """Does the plan reach the unpruned accuracy within ``tolerance`` points, at the lowest mean FLOPs among the
    methods that do? The numbers behind the answer, and one sentence."""
    table = method_table(ds)
    if plan_method not in table.index:
        raise MapflowError(f"the prune-eval store has no '{plan_method}' method")
    flops_column = next(c for c in table.columns if c.startswith("prefill "))
    clean = float(table.loc["unpruned", "accuracy %"])
    plan = table.loc[plan_method]
    within = table[table["accuracy %"] >= clean - tolerance]
    cheapest = within[flops_column].idxmin()
    reaches = bool(plan["accuracy %"] >= clean - tolerance)
    lowest = reaches and bool(plan[flops_column] <= within[flops_column].min())
    matched = fastv_at_plan_flops(ds, plan_method)
    text = (
        f"unpruned {clean:.1f} %; plan ({plan['label']}) {plan['accuracy %']:.1f} % at "
        f"{plan['FLOPs % of unpruned']:.1f} % of the prefill FLOPs, agreement {plan['agreement %']:.1f} %. "
    )
    if lowest:
        text += f"It keeps the accuracy within {tolerance:g} point(s) at the lowest FLOPs of all methods that do."
    elif reaches:
        text += (
            f"It keeps the accuracy within {tolerance:g} point(s), but {cheapest} ({table.loc[cheapest, 'label']}) "
            f"does so with fewer FLOPs ({table.loc[cheapest, 'FLOPs % of unpruned']:.1f} %)."
        )
    else:
        text += f"It loses {clean - plan['accuracy %']:.1f} points, more than {tolerance:g}."
    shown = {k: v for k, v in matched.items() if v is not None}
    if shown:
        text += " FastV at the plan's FLOPs: " + ", ".join(f"K={k} {v:.1f} %" for k, v in shown.items()) + "."
    return {
        "clean_accuracy": clean,
        "plan_accuracy": float(plan["accuracy %"]),
        "plan_flops_share": float(plan["FLOPs % of unpruned"]),
        "plan_agreement": float(plan["agreement %"]),
        "reaches_clean": reaches,
        "lowest_flops_within_tolerance": lowest,
        "cheapest_within_tolerance": str(cheapest),
        "fastv_at_plan_flops": matched,
        "samples": int(ds.sizes["sample"]),
        "text": text,
    }

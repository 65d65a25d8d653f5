"""The paper's tables, computed from result stores as pandas DataFrames (print them, or `write_table` to CSV).

- `halves_table`: Table 2 / Table B, accuracy after cross-frame knockout in the first half / second half / all layers.
- `generated_answers`: Table 2's example answers generated under each knockout.
- `pathway_table`: Table 3 / Table A, accuracy and kept attention edges of the effective pathways and random controls.
- `interval_table`: Table E(b), mean relative change per 5-layer interval, with the significant ones marked.
- `keyword_frequency`: the counts behind Fig. 4 (logit-lens keyword hits per layer bin, normalized as the paper).

The knockout tables claim exact numbers: a store of the screen's first-order estimates (``--plan screen``) is refused.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import MapflowError
from ..readouts.pathways import interval_means
from ..results.method import require_exact
from ..results.metrics import correct_after_knockout
from ..results.tasks import by_task, select_task, task_names  # noqa: F401  (task_names: public here before)


def _require(ds: xr.Dataset, *names: str, what: str) -> None:
    missing = [n for n in names if n not in ds]
    if missing:
        raise MapflowError(f"{what} needs variable(s) {', '.join(missing)}; is this the right store?")


def halves_table(ds: xr.Dataset, flow: str = "cross_frame") -> pd.DataFrame:
    """Per task: clean accuracy and, per layer set, accuracy after knockout, its drop in points, and the share of the
    originally correct samples that the knockout turns wrong (the paper's "accuracy drop among originally correct
    samples"). Accuracies are over knocked-out samples (all samples under the study's default)."""
    _require(ds, "pred_knockout", "answer_token", "correct", "knocked_out", what="the halves table")
    require_exact(ds, "the halves table (Table 2 / Table B)")
    rows = []
    for task, part in by_task(ds):
        part = part.isel(sample=part["knocked_out"].values.astype(bool))
        if part.sizes["sample"] == 0:
            continue
        correct = part["correct"].values.astype(bool)
        row = {"task": task, "n": int(part.sizes["sample"]), "clean_acc": 100 * correct.mean()}
        for layer_set in part["layers"].values:
            after = correct_after_knockout(part).sel(flow=flow, layers=layer_set).values.astype(bool)
            row[f"{layer_set}_acc"] = 100 * after.mean()
            row[f"{layer_set}_drop_pts"] = row["clean_acc"] - row[f"{layer_set}_acc"]
            row[f"{layer_set}_drop_among_correct"] = (100 * (~after[correct]).mean()) if correct.any() else np.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index("task").round(1)


def generated_answers(ds: xr.Dataset, limit: int = 5) -> pd.DataFrame:
    """Clean and knocked-out answers of the first ``limit`` samples per task (from ``--option generate=N``), with the
    prompt that answered (``prompt``: Table 2's are open-ended, ``llava_open_ended``) and the stem they continue."""
    _require(ds, "answer_text", "clean_answer_text", what="the generated-answers table")
    rows = []
    for task, part in list(by_task(ds))[:-1]:
        for i in range(min(limit, part.sizes["sample"])):
            one = part.isel(sample=i)
            row = {"task": task, "sample": str(one["sample"].values)}
            if "answer_template" in one:  # which prompt answered, and the stem the answers continue (its last line)
                row["prompt"] = str(one["answer_template"].values)
                row["stem"] = str(one["answer_prompt"].values).rpartition("\n")[2].strip()
            row["clean"] = str(one["clean_answer_text"].values)
            for layer_set in one["layers"].values:
                row[str(layer_set)] = str(one["answer_text"].isel(flow=0).sel(layers=layer_set).values)
            rows.append(row)
    return pd.DataFrame(rows)


def pathway_table(ds: xr.Dataset) -> pd.DataFrame:
    """Per task: accuracy (%) under each condition and the kept share of attention edges (mean kept / mean total, as
    the released code reports it)."""
    _require(ds, "correct_after", "edges_kept", "edges_total", what="the pathway table")
    require_exact(ds, "the pathway table (Table 3)")
    rows = []
    for task, part in by_task(ds):
        row = {"task": task, "n": int(part.sizes["sample"])}
        total = float(part["edges_total"].mean())
        for condition in part["condition"].values:
            row[f"{condition}_acc"] = 100 * float(part["correct_after"].sel(condition=condition).mean())
            row[f"{condition}_kept_%"] = 100 * float(part["edges_kept"].sel(condition=condition).mean()) / total
        rows.append(row)
    table = pd.DataFrame(rows).set_index("task").round(1)
    return table.drop(columns=["clean_kept_%"], errors="ignore")


def interval_table(ds: xr.Dataset, interval: int = 5, threshold: float = -5.0, task: str | None = None) -> pd.DataFrame:
    """Mean ``rel_change`` (%) per flow and 1-based ``interval``-layer interval (Table E(b)); cells below
    ``threshold`` are the significant ones (marked with ``*`` by `mark_significant`)."""
    _require(ds, "rel_change", what="the interval table")
    require_exact(ds, "the interval table (Table E(b))")
    rel_change = (ds if task is None else select_task(ds, task))["rel_change"]
    return interval_means(rel_change, interval).to_pandas().round(1)


def mark_significant(table: pd.DataFrame, threshold: float = -5.0) -> pd.DataFrame:
    return table.map(lambda v: f"{v:.1f}*" if np.isfinite(v) and v < threshold else f"{v:.1f}")


KEYWORD_BINS = ("paper", "released_code")


def keyword_frequency(
    ds: xr.Dataset,
    kind: str,
    *,
    interval: int = 5,
    min_hits: int = 100,
    samples: str | None = None,
    bins: str = "paper",
) -> pd.DataFrame:
    """Keyword hits of the logit lens per layer bin (Fig. 4), normalized as the paper: keywords with fewer than
    ``min_hits`` hits in total are dropped (the released code's 100; the paper names no threshold, ``min_hits=0``
    keeps every keyword), each keyword's row is normalized to sum 1, ``ALL`` is the normalized sum of the raw counts
    and ``ALL_NORM`` the mean of the normalized keyword rows.

    ``bins="paper"``: 1-based disjoint bins; ``"released_code"``: each bin also counts the next bin's first layer
    (the released code's label-inclusive slice, so bins overlap by one layer).
    ``samples``: ``"correct"`` (correctly answered, the paper's set), ``"wrong"``, ``"all"``, or None for the run's
    own ``--samples`` mode from the store's provenance (``correct`` when none is recorded). A filter the store cannot
    apply (no ``correct`` variable) is an error, never silently ignored."""
    _require(ds, "keyword", "keyword_kind", what="the keyword frequency table")
    if bins not in KEYWORD_BINS:
        raise MapflowError(f"keyword bins '{bins}': choose one of {', '.join(KEYWORD_BINS)}")
    if samples is None:
        samples = ds.attrs.get("provenance", {}).get("config", {}).get("samples", "correct")
    if samples not in ("correct", "wrong", "all"):
        raise MapflowError(f"keyword frequency samples '{samples}': choose correct, wrong or all")
    kinds = ds["keyword_kind"]
    keywords = ds["keyword"]
    if samples != "all":
        _require(ds, "correct", what=f"the keyword frequency table with samples='{samples}'")
        keep = ds["correct"].values.astype(bool)
        keep = keep if samples == "correct" else ~keep
        kinds, keywords = kinds.isel(sample=keep), keywords.isel(sample=keep)
    num_layers = ds.sizes["layer"]
    labels = [f"{a + 1}-{min(a + interval, num_layers)}" for a in range(0, num_layers, interval)]
    counts: dict[str, np.ndarray] = {}
    kind_values = kinds.transpose("layer", ...).values.reshape(num_layers, -1)
    word_values = keywords.transpose("layer", ...).values.reshape(num_layers, -1)
    for layer in range(num_layers):
        hits = Counter(str(w) for w, k in zip(word_values[layer], kind_values[layer]) if str(k) == kind)
        for word, n in hits.items():
            row = counts.setdefault(word, np.zeros(len(labels)))
            row[layer // interval] += n
            if bins == "released_code" and layer % interval == 0 and layer // interval > 0:
                row[layer // interval - 1] += n  # loc[kw, start:end+1] reaches one layer into the next bin
    raw = pd.DataFrame(counts, index=labels).T if counts else pd.DataFrame(columns=labels, dtype=float)
    raw = raw[raw.sum(axis=1) >= min_hits]
    if raw.empty:
        return raw
    normalized = raw.div(raw.sum(axis=1), axis=0)
    all_row = raw.sum(axis=0)
    normalized.loc["ALL"] = all_row / all_row.sum()
    normalized.loc["ALL_NORM"] = normalized.drop(index="ALL").mean(axis=0)
    normalized.insert(0, "hits", list(raw.sum(axis=1)) + [all_row.sum(), np.nan])
    return normalized


def write_table(table: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path)
    return path

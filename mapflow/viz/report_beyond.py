"""Report sections beyond the paper: frame-pair and head-level knockout, and the screen's calibration.

Called from `mapflow.viz.report.build_report`; uses its `ReportWriter`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import figures


def beyond_paper_sections(w, by_study, results_dir: Path) -> None:
    _frame_pairs(w, by_study)
    _heads(w, by_study)
    _calibration(w, results_dir)
    _screened_stores(w, by_study)


def _frame_pairs(w, by_study) -> None:
    for st in by_study.get(("frame_pairs", False), []):
        if "source_frame" not in st.ds.dims:
            continue
        s = w.section(f"Frame pairs, {st.model}", "beyond the paper")
        w.figure(s, f"frame_pairs_{st.model}", lambda st=st: figures.frame_pair_figure(st.ds),
                 "Knocking out one earlier frame -> later frame pair at a time (rows: keys of the source frame, "
                 "columns: queries of the target frame), mean % change per bin of sweep layers")
        mean = st.ds["rel_change"].mean("sample", skipna=True)
        if np.isfinite(mean.values).any():
            cell = mean.where(mean == mean.min(), drop=True)
            w.reading(s, f"Strongest single pair: frame {int(cell['source_frame'][0]) + 1} -> frame "
                         f"{int(cell['target_frame'][0]) + 1} around layer {int(cell['layer'][0]) + 1}, "
                         f"{float(mean.min()):.2f} % (frames and layers numbered from 1).")


def _heads(w, by_study) -> None:
    for st in by_study.get(("head_sweep", False), []):
        s = w.section(f"Heads, {st.model}", "beyond the paper")
        w.figure(s, f"heads_{st.model}", lambda st=st: figures.head_figure(st.ds),
                 "One flow knocked out in a single head at a time, in the window around each layer: mean % change")
        mean = st.ds["rel_change"].mean("sample", skipna=True)
        if np.isfinite(mean.values).any():
            cell = mean.where(mean == mean.min(), drop=True)
            w.reading(s, f"Strongest single head: {cell['flow'].values[0]} in head {int(cell['head'][0])} "
                         f"around layer {int(cell['layer'][0]) + 1}, {float(mean.min()):.2f} %.")


def calibration_table(reports: list[dict]) -> pd.DataFrame:
    rows = []
    for report in reports:
        cost = report["cost"]
        for flow, m in report["flows"].items():
            rows.append({"study": report["study"], "model": report["model"], "window": report["window"],
                         "flow": flow, "cells": m["cells"], "Spearman": m["spearman"], "Pearson": m["pearson"],
                         "top-5 recall": m["top5_recall"], "sign agreement": m["sign_agreement"],
                         "mean |exact| %": m["mean_abs_exact"], "wall ratio": cost["wall_ratio"],
                         "forward-eq. ratio": cost["forward_ratio"]})
    return pd.DataFrame(rows).set_index(["study", "model", "window", "flow"])


def _calibration(w, results_dir: Path) -> None:
    reports = [json.loads(p.read_text()) for p in sorted(Path(results_dir).glob("calibration-*.json"))]
    if not reports:
        return
    s = w.section("Calibration of the screen", "beyond the paper")
    table = calibration_table(reports)
    w.table(s, "calibration", table.round(2),
            "The first-order screen (one forward, one backward, exact local attention changes) against the exact "
            "engine on the same samples; Spearman/Pearson over (sample, layer) cells per flow, recall of the 5 most "
            "harmful exact cells among the screen's 5, sign agreement on cells with |exact| >= 0.1 %")
    w.reading(s, f"Median Spearman over flows {float(table['Spearman'].median()):.2f}, median top-5 recall "
                 f"{float(table['top-5 recall'].median()):.2f}. The screen is a first-order estimate: it misses the "
                 "non-linear part of a knockout (large single-layer effects, saturated answer probabilities) and "
                 "interactions between the window's layers; verify cells with --plan 'screen+verify K'.")


def _screened_stores(w, by_study) -> None:
    """Stores run with --plan screen are drawn like the exact ones but labelled as estimates."""
    for (study, open_ended), stores in sorted(by_study.items()):
        if not study.endswith(":screen"):
            continue
        study = study.removesuffix(":screen")
        for st in stores:
            if "flow" not in st.ds.dims or "layer" not in st.ds.dims:
                continue
            s = w.section(f"{study} (screen estimate), {st.model}", "beyond the paper")
            w.figure(s, f"screen_{study}_{st.model}", lambda st=st: figures.flow_figure(st.ds),
                     "First-order screen estimates (not exact knockouts)")

"""Report sections beyond the paper that belong to no one study: the screen's calibration and screened stores.

Called from `mapflow.viz.report.build_report`; uses its `ReportWriter`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from . import figures


def beyond_paper_sections(w, by_study, results_dir: Path) -> None:
    _calibration(w, results_dir)
    _screened_stores(w, by_study)


def calibration_table(reports: list[dict]) -> pd.DataFrame:
    rows = []
    for report in reports:
        cost = report["cost"]
        for flow, m in report["flows"].items():
            rows.append(
                {
                    "study": report["study"],
                    "model": report["model"],
                    "window": report["window"],
                    "flow": flow,
                    "cells": m["cells"],
                    "Spearman": m["spearman"],
                    "Pearson": m["pearson"],
                    "top-5 recall": m["top5_recall"],
                    "sign agreement": m["sign_agreement"],
                    "mean |exact| %": m["mean_abs_exact"],
                    "wall ratio": cost["wall_ratio"],
                    "forward-eq. ratio": cost["forward_ratio"],
                }
            )
    return pd.DataFrame(rows).set_index(["study", "model", "window", "flow"])


def _calibration(w, results_dir: Path) -> None:
    reports = [json.loads(p.read_text()) for p in sorted(Path(results_dir).glob("calibration-*.json"))]
    if not reports:
        return
    s = w.section("Calibration of the screen", "beyond the paper")
    table = calibration_table(reports)
    w.table(
        s,
        "calibration",
        table.round(2),
        "The first-order screen (one forward, one backward, exact local attention changes) against the exact "
        "engine on the same samples; Spearman/Pearson over (sample, layer) cells per flow, recall of the 5 most "
        "harmful exact cells among the screen's 5, sign agreement on cells with |exact| >= 0.1 %",
    )
    w.reading(
        s,
        f"Median Spearman over flows {float(table['Spearman'].median()):.2f}, median top-5 recall "
        f"{float(table['top-5 recall'].median()):.2f}. The screen is a first-order estimate: it misses the "
        "non-linear part of a knockout (large single-layer effects, saturated answer probabilities) and "
        "interactions between the window's layers; verify cells with --plan 'screen+verify K'.",
    )


def _screened_stores(w, by_study) -> None:
    """Stores run with --plan screen are drawn like the exact ones but labelled as estimates."""
    for (study, _open_ended), stores in sorted(by_study.items()):
        if not study.endswith(":screen"):
            continue
        study = study.removesuffix(":screen")
        for st in stores:
            if "flow" not in st.ds.dims or "layer" not in st.ds.dims:
                continue
            s = w.section(f"{study} (screen estimate), {st.model}", "beyond the paper")
            w.figure(
                s,
                f"screen_{study}_{st.model}",
                lambda st=st: figures.flow_figure(st.ds),
                "First-order screen estimates (not exact knockouts)",
            )

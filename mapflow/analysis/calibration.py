"""`mapflow calibrate STUDY` as a library call: run a screenable study exactly and as a screen on the same samples
and compare them (the agreement measures and the report are `mapflow.knockout.screen_agreement`)."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import xarray as xr

from ..knockout.screen_agreement import WorkCounter, agreement
from .catalog import check_screenable
from .progress import tqdm
from .runner import measure_sample


def calibrate(study, adapter, samples, config, model_name: str, *, progress: bool = True) -> dict:
    """Run the study exactly and as a screen on each sample; agreement per flow and the cost of each."""
    check_screenable(study, study.__name__.split(".")[-1], "screen")
    exact_config, screen_config = replace(config, plan="auto"), replace(config, plan="screen")
    exact, screen, failed = [], [], {}
    wall = {"exact": 0.0, "screen": 0.0}
    screen_forwards = 0
    with WorkCounter() as work:
        for sample in tqdm(samples, desc="calibrate", unit="sample", disable=not progress):
            try:
                t0 = time.perf_counter()
                a = measure_sample(study, adapter, sample, exact_config, model_name)
                t1 = time.perf_counter()
                b = measure_sample(study, adapter, sample, screen_config, model_name)
                t2 = time.perf_counter()
            except (ValueError, RuntimeError) as err:
                failed[sample.sample_id] = f"{type(err).__name__}: {err}"
                continue
            wall["exact"] += t1 - t0
            wall["screen"] += t2 - t1
            measured = bool(np.asarray(a["knocked_out"]).all())
            pred, gt = int(a["pred_base"].values.ravel()[0]), int(a["answer_token"].values.ravel()[0])
            screen_forwards += (1 + 2 * len({pred, gt})) if measured else 1
            exact.append(a)
            screen.append(b)
    if not exact:
        raise RuntimeError(f"no sample could be calibrated: {failed}")
    exact_ds, screen_ds = xr.concat(exact, "sample"), xr.concat(screen, "sample")
    measured = int(exact_ds["knocked_out"].sum())
    # clean passes: the exact engine's clean state and the screen's forward are counted once per sample each
    exact_forwards = work.forward_equivalents + len(exact)
    return {
        "study": study.__name__.split(".")[-1],
        "model": model_name,
        "samples": len(exact),
        "knocked_out_samples": measured,
        "failed": failed,
        "window": config.window.label,
        "screen_metric": config.option("screen_metric", "logodds"),
        "flows": agreement(exact_ds, screen_ds),
        "cost": {
            "exact_wall_s": wall["exact"],
            "screen_wall_s": wall["screen"],
            "wall_ratio": wall["exact"] / max(wall["screen"], 1e-9),
            "exact_forward_equivalents": exact_forwards,
            "screen_forward_equivalents": screen_forwards,
            "forward_ratio": exact_forwards / max(screen_forwards, 1),
        },
    }

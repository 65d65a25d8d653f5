"""Measure an organism's targets through the same adapter, runner and store every study uses.

Runs the ``cross_frame_halves`` study on every sample (``samples="all"``), then reads from the store: clean accuracy
per task, accuracy with cross-frame attention blocked in the first half / second half / all layers, and the drop in
points. The summary is written into the checkpoint's ``mapflow.json`` so the recipe and its measured accuracies travel
together.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import xarray as xr

from ..analysis.resolve import prepare_run
from ..analysis.runner import run_study
from ..models import load_adapter
from ..results.tasks import by_task, select_task


def accuracy_table(ds: xr.Dataset) -> dict:
    """Per task and averaged over tasks: clean accuracy and accuracy after each cross-frame knockout, in %."""
    ds = ds.load()
    correct_after = (ds.pred_knockout == ds.answer_token).sel(flow="cross_frame")
    table = {}
    for task, part in by_task(ds, overall=None):
        after_in_task = select_task(correct_after, task)
        entry = {"n": part.sizes["sample"], "clean": 100 * float(part.correct.mean())}
        for layers in ds.layers.values.tolist():
            after = 100 * float(after_in_task.sel(layers=layers).mean())
            entry[layers] = after
            entry[f"drop_{layers}"] = entry["clean"] - after
        table[str(task)] = entry
    keys = [k for k in next(iter(table.values())) if k != "n"]
    table["mean_over_tasks"] = {k: float(np.mean([t[k] for t in table.values()])) for k in keys}
    return table


def format_table(table: dict, markdown: bool = False) -> str:
    columns = [k for k in table["mean_over_tasks"]]
    if markdown:
        lines = [
            "| task | " + " | ".join(c.replace("_", " ") for c in columns) + " |",
            "|---" * (len(columns) + 1) + "|",
        ]
        lines += [
            f"| {task} | " + " | ".join(f"{entry[c]:.1f}" for c in columns) + " |" for task, entry in table.items()
        ]
        return "\n".join(lines)
    lines = ["task".ljust(20) + "".join(c.rjust(20) for c in columns)]
    for task, entry in table.items():
        lines.append(task.ljust(20) + "".join(f"{entry[c]:20.1f}" for c in columns))
    return "\n".join(lines)


def forward_seconds(model_dir) -> float:
    """Wall time to load the checkpoint and run one forward on one shipped-size input (no self-test)."""
    import torch

    started = time.perf_counter()
    adapter = load_adapter(model_dir, self_test=False)
    from ..models import self_test_input

    prepared = self_test_input(adapter, num_frames=8)
    with torch.no_grad():
        adapter.hf_model(**prepared.inputs)
    return time.perf_counter() - started


def evaluate_organism(model_dir, data_dir, out_store, *, progress: bool = True, record: bool = True) -> dict:
    model_dir, data_dir = Path(model_dir), Path(data_dir)
    run = prepare_run("cross_frame_halves", model_dir, data_dir, samples="all")  # as `mapflow run` would
    run.provenance["config"]["purpose"] = "organism evaluation"
    run_study(
        run.study,
        run.adapter,
        run.samples,
        out_store,
        config=run.config,
        provenance=run.provenance,
        overwrite=True,
        progress=progress,
    )
    table = accuracy_table(xr.open_zarr(out_store, chunks=None))
    summary = {"data": str(data_dir), "accuracy_percent": table, "load_and_forward_seconds": forward_seconds(model_dir)}
    if record:
        meta_file = model_dir / "mapflow.json"
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        meta["evaluation"] = summary
        meta_file.write_text(json.dumps(meta, indent=2))
    return summary

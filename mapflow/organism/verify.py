"""Does the analysis recover what was planted in ``organism-pathway``? (``mapflow organism verify MODEL``)

Four studies run on the shipped benchmark through the same adapter, runner and stores as every other analysis:

1. ``planted_routes``: each planted flow blocked inside its planted layers and in all other layers;
2. a window sweep (``information_flow`` with the three route flows, window 3): the paper's Table E rule
   (`mapflow.readouts.pathways.derive_layers`, interval 1 on 8 layers, threshold -5 %) derives each route's layers from it;
3. ``effective_pathway --option from=<sweep store>``: accuracy with only the derived routes open, against the seeded
   random-blocking control at the same edge budget (and, reported only, at the released scripts' share of 0.58);
4. ``logit_lens --option keywords=organism``: where spatial and temporal words appear on video tokens.

Each target is computed from the stores and compared with the issue's threshold; the summary (values, thresholds,
pass/fail) is written into the checkpoint's ``mapflow.json`` under ``verification``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..analysis.context import StudyConfig
from ..analysis.runner import load_study, run_study
from ..data import load_tvbench
from ..errors import MapflowError
from ..inputs.prompts import resolve_template
from ..knockout.flows import Window
from ..models import load_adapter
from ..readouts.pathways import ROUTE_FLOWS, derive_layers
from ..results.provenance import run_provenance
from ..results.store import open_dataset

TARGETS = {
    "clean_min": 90.0,  # % accuracy on each task
    "inside_drop_min": 20.0,  # points, mean over tasks, blocking an open route inside its planted layers
    "outside_drop_max": 5.0,  # ... blocking it in every other layer
    "closed_drop_max": 2.0,  # video->last (closed everywhere) blocked in every layer
    "derived_tolerance": 1,  # layers at each end, Table E rule against the planted range
    "pathway_gap_max": 5.0,  # effective pathway: points below clean
    "random_drop_min": 20.0,  # random blocking at the same edge budget: points below clean
}
SWEEP_WINDOW = 3
TABLE_E_INTERVAL = 1  # the paper's 5 layers of 32, on 8 layers
TABLE_E_THRESHOLD = -5.0
LENS_BIN = 3  # layers per bin of the keyword frequency
# reported next to the target, not a target: the released scripts' random-blocking share for LLaVA-NeXT-7B (1 minus the
# kept share of its effective run); the matched budget is a smaller share on a prompt that is mostly text
PAPER_RANDOM_RATIO = 0.58


def planted_routes(model_dir: Path) -> dict:
    meta_file = model_dir / "mapflow.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    if "planted_routes" not in meta:
        raise MapflowError(
            f"{meta_file} records no planted_routes: only a checkpoint trained with planted routes "
            "(mapflow organism train --variant pathway) can be verified"
        )
    return meta["planted_routes"]


def _run(
    name: str, adapter, samples, model_dir, data_dir, out: Path, config: StudyConfig, progress: bool
) -> xr.Dataset:
    run_config = {
        "study": name,
        **config.to_dict(),
        "model": str(model_dir.resolve()),
        "data": str(data_dir.resolve()),
        "purpose": "organism verification",
    }
    provenance = run_provenance(
        study=name,
        model_dir=model_dir,
        data_root=data_dir,
        annotation_files=sorted((data_dir / "json").glob("*.json")),
        seed=config.seed,
        config=run_config,
        runtime={"device": "cpu"},
    )
    run_study(
        load_study(name), adapter, samples, out, config=config, provenance=provenance, overwrite=True, progress=progress
    )
    return open_dataset(out).load()


def _per_task_mean(values: xr.DataArray, task: xr.DataArray) -> tuple[dict, float]:
    """Mean of ``values`` (dim sample) per task and the mean over tasks."""
    per_task = {str(t): float(values[task.values == t].mean()) for t in sorted(set(task.values.tolist()))}
    return per_task, float(np.mean(list(per_task.values())))


def route_targets(ds: xr.Dataset, routes: dict) -> dict:
    """Clean accuracy per task, and per flow the accuracy drop (points, mean over tasks) inside / outside."""
    clean, _ = _per_task_mean(100.0 * ds.correct.astype(float), ds.task)
    result = {"clean_percent": clean, "clean_ok": all(v >= TARGETS["clean_min"] for v in clean.values()), "flows": {}}
    _, clean_mean = _per_task_mean(100.0 * ds.correct.astype(float), ds.task)
    for flow, ranges in routes.items():
        entry = {"planted": ranges}
        for region in ("inside", "outside"):
            pred = ds.pred_knockout.sel(flow=flow, region=region)
            if (pred < 0).all():
                continue
            _, after = _per_task_mean(100.0 * (pred == ds.answer_token).astype(float), ds.task)
            entry[f"drop_{region}"] = clean_mean - after
        if ranges:
            entry["ok"] = bool(
                entry["drop_inside"] >= TARGETS["inside_drop_min"]
                and entry.get("drop_outside", 0.0) < TARGETS["outside_drop_max"]
            )
        else:
            entry["ok"] = bool(entry["drop_outside"] < TARGETS["closed_drop_max"])
        result["flows"][flow] = entry
    return result


def derived_targets(sweep: xr.Dataset, routes: dict) -> dict:
    """The Table E rule on the sweep: derived layers per route against the planted range (± tolerance)."""
    derived = derive_layers(sweep["rel_change"], interval=TABLE_E_INTERVAL, threshold=TABLE_E_THRESHOLD)
    tolerance = TARGETS["derived_tolerance"]
    result = {}
    for route, flow in ROUTE_FLOWS.items():
        layers = getattr(derived, route)
        ((a, b),) = routes[flow]
        ok = (
            bool(layers)
            and list(layers) == list(range(layers[0], layers[-1] + 1))
            and abs(layers[0] - a) <= tolerance
            and abs(layers[-1] + 1 - b) <= tolerance
        )
        result[flow] = {"planted": [a, b], "derived": [int(i) for i in layers], "ok": ok}
    return result


def _condition_accuracy(ds: xr.Dataset) -> dict[str, float]:
    return {
        condition: _per_task_mean(100.0 * ds.correct_after.sel(condition=condition).astype(float), ds.task)[1]
        for condition in ds.condition.values.tolist()
    }


def pathway_targets(ds: xr.Dataset, at_paper_ratio: xr.Dataset | None = None) -> dict:
    """Accuracy (%, mean over tasks) per effective-pathway condition and the two targets; with ``at_paper_ratio`` (the
    same run with ``random_block_ratio``) also the random controls at the released scripts' share (reported only)."""
    result = _condition_accuracy(ds)
    gap = result["clean"] - result["effective"]
    random_drop = result["clean"] - result["random"]
    summary = {
        "accuracy_percent": result,
        "effective_gap": gap,
        "random_drop": random_drop,
        "random_blocked_share": 1.0 - float(ds.edges_kept.sel(condition="random").sum() / ds.edges_total.sum()),
        "open_layers": dict(zip(ds.route.values.tolist(), ds.open_layers.isel(sample=0).values.tolist())),
        "ok": bool(gap <= TARGETS["pathway_gap_max"] and random_drop >= TARGETS["random_drop_min"]),
    }
    if at_paper_ratio is not None:
        paper = _condition_accuracy(at_paper_ratio)
        summary["at_paper_ratio"] = {
            "random_block_ratio": PAPER_RANDOM_RATIO,
            "random": paper["random"],
            "random_drop": paper["clean"] - paper["random"],
            "random_strict": paper["random_strict"],
        }
    return summary


def lens_targets(ds: xr.Dataset, routes: dict) -> dict:
    """Keyword hits per layer on video tokens: spatial most frequent in the first bin, temporal peaking after the
    planted cross-frame layers."""
    kinds = ds["keyword_kind"].transpose("layer", ...).values.reshape(ds.sizes["layer"], -1)
    hits = {kind: [int((row == kind).sum()) for row in kinds] for kind in ("spatial", "temporal")}
    bins = list(range(0, len(kinds), LENS_BIN))
    spatial_bins = [sum(hits["spatial"][b : b + LENS_BIN]) / len(hits["spatial"][b : b + LENS_BIN]) for b in bins]
    cross_frame_end = max(b for _, b in routes["cross_frame"])
    temporal_peak = int(np.argmax(hits["temporal"]))
    return {
        "hits_per_layer": hits,
        "spatial_per_layer_by_bin": spatial_bins,
        "bin_layers": LENS_BIN,
        "temporal_peak_layer": temporal_peak,
        "cross_frame_end": cross_frame_end,
        "ok": bool(
            int(np.argmax(spatial_bins)) == 0
            and temporal_peak >= cross_frame_end
            and hits["temporal"][temporal_peak] > 0
        ),
    }


SWEEP_STORE = "route_sweep.zarr"


@dataclass
class Verification:
    """What the four parts share: the checkpoint and its planted routes, the benchmark samples, the loaded adapter,
    the prompt template and the folder the parts' stores go to. Each ``measure_*`` part runs its own studies, so the
    tests can run the parts on separate workers."""

    model_dir: Path
    data_dir: Path
    out_dir: Path
    routes: dict
    adapter: Any
    samples: list
    template: str
    progress: bool = True

    @classmethod
    def open(cls, model_dir, data_dir, out_dir, *, limit: int | None = None, progress: bool = True) -> Verification:
        model_dir, data_dir = Path(model_dir), Path(data_dir).resolve()
        routes = planted_routes(model_dir)
        adapter = load_adapter(model_dir)
        samples = load_tvbench(data_dir, limit=limit)
        template = resolve_template(None, adapter.prompt_template, "tvbench").name
        return cls(model_dir, data_dir, Path(out_dir), routes, adapter, samples, template, progress)

    def run(self, name: str, store: str, **config) -> xr.Dataset:
        return _run(
            name,
            self.adapter,
            self.samples,
            self.model_dir,
            self.data_dir,
            self.out_dir / store,
            StudyConfig(prompt_template=self.template, **config),
            self.progress,
        )


def measure_routes(verification: Verification) -> dict:
    """Part 1 (``planted_routes``): clean accuracy, and each planted flow blocked inside / outside its layers."""
    routes = verification.routes
    blocks = verification.run(
        "planted_routes", "planted_routes.zarr", samples="all", options={"routes": json.dumps(routes, sort_keys=True)}
    )
    return route_targets(blocks, routes)


def measure_table_e(verification: Verification) -> dict:
    """Part 2: the window sweep over the three route flows (its store: ``out_dir / SWEEP_STORE``) and the layers the
    Table E rule derives from it."""
    sweep = verification.run(
        "information_flow", SWEEP_STORE, window=Window(size=SWEEP_WINDOW), flows=tuple(ROUTE_FLOWS.values())
    )
    return derived_targets(sweep, verification.routes)


def layers_from_sweep(sweep_store: Path) -> dict:
    """effective_pathway's options deriving the open layers from the sweep store with the Table E rule (as
    ``derived_targets``). The route is planted in every task alike: derive it from all of them (the paper uses Action
    Antonym, the effective_pathway default when a store holds it)."""
    return {
        "from": str(sweep_store),
        "interval": str(TABLE_E_INTERVAL),
        "threshold": str(TABLE_E_THRESHOLD),
        "task": "all",
    }


def layers_from_table_e(table_e: dict) -> dict:
    """effective_pathway's options opening the layers a Table E result (``measure_table_e`` or a recorded one)
    derived: the same layers as ``layers_from_sweep`` on that sweep, without needing its store."""
    ranges = ";".join(
        f"{route}=" + ",".join(str(layer) for layer in table_e[flow]["derived"]) for route, flow in ROUTE_FLOWS.items()
    )
    return {"ranges": ranges}


def measure_pathway(verification: Verification, layer_options: dict, *, at_paper_ratio: bool = True) -> dict:
    """Part 3: the effective pathway with the layers ``layer_options`` chooses, against the random controls; with
    ``at_paper_ratio`` also the controls at the released scripts' share (reported only, not a target)."""
    pathway = verification.run("effective_pathway", "effective_pathway.zarr", samples="all", options=layer_options)
    at_ratio = None
    if at_paper_ratio:
        at_ratio = verification.run(
            "effective_pathway",
            "effective_pathway_paper_ratio.zarr",
            samples="all",
            options={**layer_options, "random_block_ratio": str(PAPER_RANDOM_RATIO)},
        )
    return pathway_targets(pathway, at_ratio)


def measure_lens(verification: Verification) -> dict:
    """Part 4: the logit lens with the organism keywords on video tokens."""
    lens = verification.run("logit_lens", "logit_lens.zarr", samples="all", options={"keywords": "organism"})
    return lens_targets(lens, verification.routes)


def all_met(summary: dict) -> bool:
    return bool(
        summary["routes"]["clean_ok"]
        and all(f["ok"] for f in summary["routes"]["flows"].values())
        and all(r["ok"] for r in summary["table_e"].values())
        and summary["effective_pathway"]["ok"]
        and summary["logit_lens"]["ok"]
    )


def verify_organism(
    model_dir, data_dir, out_dir, *, limit: int | None = None, progress: bool = True, record: bool = True
) -> dict:
    verification = Verification.open(model_dir, data_dir, out_dir, limit=limit, progress=progress)
    summary = {
        "data": str(verification.data_dir),
        "samples_per_task": limit,
        "targets": TARGETS,
        "routes": measure_routes(verification),
        "table_e": measure_table_e(verification),
        "effective_pathway": measure_pathway(verification, layers_from_sweep(verification.out_dir / SWEEP_STORE)),
        "logit_lens": measure_lens(verification),
    }
    summary["all_met"] = all_met(summary)
    if record:
        meta_file = verification.model_dir / "mapflow.json"
        meta = json.loads(meta_file.read_text())
        meta["verification"] = summary
        meta_file.write_text(json.dumps(meta, indent=2))
    return summary


def format_summary(summary: dict) -> str:
    routes = summary["routes"]
    lines = [
        "clean accuracy (%): "
        + ", ".join(f"{t} {v:.1f}" for t, v in routes["clean_percent"].items())
        + ("  [ok]" if routes["clean_ok"] else "  [NOT MET: >= 90 each]")
    ]
    for flow, entry in routes["flows"].items():
        cells = ", ".join(
            f"{k.replace('_', ' ')} {entry[k]:.1f}" for k in ("drop_inside", "drop_outside") if k in entry
        )
        lines.append(f"{flow} planted {entry['planted']}: {cells} points  [{'ok' if entry['ok'] else 'NOT MET'}]")
    for flow, entry in summary["table_e"].items():
        lines.append(
            f"Table E rule, {flow}: planted {entry['planted']}, derived layers {entry['derived']}  "
            f"[{'ok' if entry['ok'] else 'NOT MET'}]"
        )
    pathway = summary["effective_pathway"]
    lines.append(
        "effective pathway accuracy (%): "
        + ", ".join(f"{k} {v:.1f}" for k, v in pathway["accuracy_percent"].items())
        + f"  [{'ok' if pathway['ok'] else 'NOT MET'}: gap {pathway['effective_gap']:.1f}, random drop "
        f"{pathway['random_drop']:.1f}, random blocks {100 * pathway['random_blocked_share']:.0f} % of the edges]"
    )
    if "at_paper_ratio" in pathway:
        paper = pathway["at_paper_ratio"]
        lines.append(
            f"  (not a target) random blocking at the released scripts' share "
            f"{paper['random_block_ratio']}: accuracy {paper['random']:.1f}, drop {paper['random_drop']:.1f}"
        )
    lens = summary["logit_lens"]
    lines.append(
        f"logit lens: spatial hits per layer {lens['hits_per_layer']['spatial']}, temporal "
        f"{lens['hits_per_layer']['temporal']} (peak at layer {lens['temporal_peak_layer']}, cross-frame "
        f"ends at {lens['cross_frame_end']})  [{'ok' if lens['ok'] else 'NOT MET'}]"
    )
    lines.append("all targets met" if summary["all_met"] else "some targets NOT met")
    return "\n".join(lines)

"""The paper's analyses as one suite of runs on the embedded model organisms: the main job (`mapflow demo`).

Each run is what a `mapflow run` command line would do (the same `mapflow.analysis.resolve.prepare_run`); the suite
writes one zarr store per run into the output directory, then the figures, tables and the HTML report
(`mapflow.viz.report`). Runs resume like any `mapflow run`, so an interrupted demo continues where it stopped. Which
runs: the ``demo`` each study declares (``@mapflow.study(demo=...)``, `organism_suite`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from .calibrate import calibrate_run

OPEN_ENDED_TASKS = ("action_antonym", "moving_direction", "object_count")  # appendix C.1's tasks
# a study run's ``open_ended`` demo entry: appendix C.1's sentence completion
OPEN_ENDED = {"template": "llava_open_ended", "tasks": OPEN_ENDED_TASKS, "samples": "all"}


@dataclass(frozen=True)
class SuiteRun:
    name: str  # store name
    study: str
    variant: str = "video"  # which organism
    settings: dict = field(default_factory=dict)  # `prepare_run` keywords, i.e. `mapflow run` options
    limit_scale: float = 1.0  # share of the suite's per-task limit (expensive studies take fewer samples)
    depends_on: tuple[str, ...] = field(default=())  # stores whose results this run reads


def organism_suite(window: int = 3) -> list[SuiteRun]:
    """Every study of the paper on the 8-layer organisms (window 3 plays the role of the paper's 9 of 32): the runs
    each study declares in its ``demo`` (`mapflow.analysis.declaration.DemoRun`: ``order``, ``name``, ``variant``,
    ``window`` (use the suite's), ``open_ended``, ``options``, ``limit_scale``, ``depends_on``), in ``order``."""
    from ..analysis.declaration import declaration_of
    from ..analysis.runner import available_studies, load_study

    declared = []
    for study in available_studies():
        for entry in declaration_of(load_study(study)).demo:
            settings = ({"window": window} if entry.window else {}) | (OPEN_ENDED if entry.open_ended else {})
            if entry.options is not None:
                settings["options"] = dict(entry.options)
            declared.append(
                (entry.order, SuiteRun(entry.name, study, entry.variant, settings, entry.limit_scale, entry.depends_on))
            )
    return [run for _, run in sorted(declared, key=lambda pair: pair[0])]


# The screen's calibration against the exact engine (`mapflow calibrate`), written next to the stores for the report.
CALIBRATION_STUDIES = ("information_flow",)


def run_suite(out_dir: Path, *, limit: int, window: int = 3, only=None, report: bool = True) -> dict:
    """Run the suite into ``out_dir`` and write the report; returns the manifest (also saved as suite.json)."""
    from ..analysis.resolve import prepare_run
    from ..analysis.runner import run_study
    from ..embedded import organism_dir

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    manifest = {"limit_per_task": limit, "window": window, "runs": []}
    for run in organism_suite(window):
        if only and run.name not in only and run.study not in only:
            continue
        store = out_dir / f"{run.name}.zarr"
        settings = {**run.settings, "limit": max(1, round(limit * run.limit_scale)), "threads": 1}
        if run.depends_on:
            from_stores = ",".join(str(out_dir / f"{d}.zarr") for d in run.depends_on)
            settings["options"] = {**settings.get("options", {}), "from": from_stores}
        t0 = time.perf_counter()
        print(f"[{time.perf_counter() - started:6.1f} s] {run.name}", flush=True)
        prepared = prepare_run(run.study, organism_dir(run.variant), **settings)
        print(
            run_study(
                prepared.study,
                prepared.adapter,
                prepared.samples,
                store,
                config=prepared.config,
                provenance=prepared.provenance,
            ).describe()
        )
        manifest["runs"].append(
            {
                "name": run.name,
                "study": run.study,
                "model": f"organism-{run.variant}",
                "store": store.name,
                "settings": settings,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    for study in CALIBRATION_STUDIES:
        if only and f"calibrate-{study}" not in only and "calibrate" not in only:
            continue
        t0 = time.perf_counter()
        print(f"[{time.perf_counter() - started:6.1f} s] calibrate-{study}", flush=True)
        args = [
            "calibrate",
            study,
            "--model",
            str(organism_dir("video")),
            "--limit",
            str(max(1, round(limit * 0.3))),
            "--window",
            str(window),
            "--out",
            str(out_dir),
            "--no-progress",
        ]  # the equivalent command, recorded
        calibrate_run(
            study,
            str(organism_dir("video")),
            out=str(out_dir),
            progress=False,
            benchmark="tvbench",
            limit=max(1, round(limit * 0.3)),
            window=window,
            tasks=None,
            samples=None,
            options={},
            seed=42,
            attn="sdpa",
            threads=1,
            heads=None,
        )
        manifest["runs"].append(
            {
                "name": f"calibrate-{study}",
                "study": study,
                "model": "organism-video",
                "store": f"calibration-{study}.json",
                "args": args,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    if not only or "prune_eval" in only:  # beyond the paper: the pathway organism's map turned into a pruned model
        from .prune import demo_prune

        t0 = time.perf_counter()
        print(f"[{time.perf_counter() - started:6.1f} s] prune_eval-pathway", flush=True)
        pruned = demo_prune(out_dir, limit=limit)
        if pruned:
            manifest["runs"].append({**pruned, "seconds": round(time.perf_counter() - t0, 1)})
    manifest["study_seconds"] = round(time.perf_counter() - started, 1)
    (out_dir / "suite.json").write_text(json.dumps(manifest, indent=2))
    if report:
        from ..viz.report import build_report

        path = build_report(out_dir)
        manifest["report"] = str(path)
    manifest["total_seconds"] = round(time.perf_counter() - started, 1)
    (out_dir / "suite.json").write_text(json.dumps(manifest, indent=2))
    return manifest

"""The paper's analyses as one suite of runs on the embedded model organisms: the main job (`mapflow demo`).

Each run is a `mapflow run` command line; the suite writes one zarr store per run into the output directory, then
the figures, tables and the HTML report (`mapflow.report`). Runs resume like any `mapflow run`, so an interrupted
demo continues where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

OPEN_ENDED_TASKS = ("action_antonym", "moving_direction", "object_count")  # appendix C.1's tasks


@dataclass(frozen=True)
class SuiteRun:
    name: str  # store name
    study: str
    variant: str = "video"  # which organism
    args: tuple[str, ...] = ()
    limit_scale: float = 1.0  # share of the suite's per-task limit (expensive studies take fewer samples)
    depends_on: tuple[str, ...] = field(default=())  # stores whose results this run reads


def organism_suite(window: int = 3) -> list[SuiteRun]:
    """Every study of the paper on the 8-layer organisms (window 3 plays the role of the paper's 9 of 32).

    The figures about routes (Figs. 3, 4, 6, 7, 8, T, Table 3/E) run on organism-pathway, whose route is planted and
    recorded; the cross-frame contrast (Fig. 2, Table 2, Fig. V) on organism-video against organism-frames."""
    w = ("--window", str(window))
    open_ended = ("--template", "llava_open_ended", "--tasks", *OPEN_ENDED_TASKS, "--samples", "all")
    return [
        SuiteRun("cross_frame-video", "cross_frame", "video", w),
        SuiteRun("cross_frame-frames", "cross_frame", "frames", w),
        SuiteRun("cross_frame-pathway", "cross_frame", "pathway", w),
        SuiteRun("information_flow-pathway", "information_flow", "pathway", w),
        SuiteRun("question_options_to_last-pathway", "question_options_to_last", "pathway", w),
        SuiteRun("into_true_option-pathway", "into_true_option", "pathway", w),
        # only wrongly answered samples are knocked out: look at more samples to find some
        SuiteRun("failure_cases-video", "failure_cases", "video", w, limit_scale=4),
        SuiteRun("window_sizes-video", "window_sizes", "video", ("--option", "sizes=1,3,5,7")),
        SuiteRun("progressive-video", "progressive", "video"),
        SuiteRun("progressive-frames", "progressive", "frames"),
        SuiteRun("cross_frame_halves-video", "cross_frame_halves", "video", ("--option", "generate=3")),
        SuiteRun("cross_frame_halves-frames", "cross_frame_halves", "frames", ("--option", "generate=3")),
        SuiteRun("answer_probability-pathway", "answer_probability", "pathway"),
        SuiteRun("logit_lens-pathway", "logit_lens", "pathway", ("--option", "keywords=organism"), limit_scale=0.5),
        SuiteRun("attention_maps-video", "attention_maps", "video", ("--option", "max_queries=6"), limit_scale=0.2),
        SuiteRun("effective_pathway-pathway", "effective_pathway", "pathway",
                 ("--option", "interval=1"), depends_on=("cross_frame-pathway", "information_flow-pathway")),
        SuiteRun("open_ended_cross_frame-video", "cross_frame", "video", w + open_ended, limit_scale=0.5),
        SuiteRun("open_ended_information_flow-video", "information_flow", "video", w + open_ended, limit_scale=0.5),
        SuiteRun("open_ended_answer_probability-video", "answer_probability", "video", open_ended, limit_scale=0.5),
        SuiteRun("verb_anchors-video", "verb_anchors", "video",
                 w + open_ended + ("--option", "verbs=auto", "--option", "max_new_tokens=16"), limit_scale=0.2),
    ]


def run_suite(out_dir: Path, *, limit: int, window: int = 3, only=None, report: bool = True) -> dict:
    """Run the suite into ``out_dir`` and write the report; returns the manifest (also saved as suite.json)."""
    from .cli import build_parser, cmd_run
    from .embedded import organism_dir

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    manifest = {"limit_per_task": limit, "window": window, "runs": []}
    for run in organism_suite(window):
        if only and run.name not in only and run.study not in only:
            continue
        store = out_dir / f"{run.name}.zarr"
        args = ["run", run.study, "--model", str(organism_dir(run.variant)), "--out", str(store),
                "--limit", str(max(1, round(limit * run.limit_scale))), "--threads", "1", *run.args]
        if run.depends_on:
            args += ["--option", "from=" + ",".join(str(out_dir / f"{d}.zarr") for d in run.depends_on)]
        t0 = time.perf_counter()
        print(f"[{time.perf_counter() - started:6.1f} s] {run.name}", flush=True)
        cmd_run(build_parser().parse_args(args))
        manifest["runs"].append({"name": run.name, "study": run.study, "model": f"organism-{run.variant}",
                                 "store": store.name, "args": args[1:], "seconds": round(time.perf_counter() - t0, 1)})
    manifest["study_seconds"] = round(time.perf_counter() - started, 1)
    (out_dir / "suite.json").write_text(json.dumps(manifest, indent=2))
    if report:
        from .report import build_report

        path = build_report(out_dir)
        manifest["report"] = str(path)
    manifest["total_seconds"] = round(time.perf_counter() - started, 1)
    (out_dir / "suite.json").write_text(json.dumps(manifest, indent=2))
    return manifest

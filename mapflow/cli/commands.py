"""Command line: ``mapflow run | plot | show | studies | models | demo``. With no arguments it runs the demo."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .. import differences
from ..errors import MapflowError
from ..inputs.checks import user_path
from .ndif_server import add_ndif_parser
from .option_values import parse_heads as _parse_heads
from .option_values import parse_options as _parse_options
from .organism import add_organism_parser
from .remote_options import add_remote_arguments, backend_from_args
from .scale_options import add_scale_options, run_with_executor


def add_run_arguments(parser: argparse.ArgumentParser, with_study: bool = True) -> None:
    if with_study:
        parser.add_argument("study", help="study name (see `mapflow studies`) or path to a .py file defining run(ctx)")
    parser.add_argument(
        "--model", type=user_path, help="local Hugging Face checkpoint directory (default: the embedded tiny model)"
    )
    parser.add_argument(
        "--data", type=user_path, help="benchmark root in its published layout (default: the embedded benchmark)"
    )
    parser.add_argument(
        "--benchmark",
        default="tvbench",
        help="tvbench | tomato | longvideobench | videomme | vcgbench (default tvbench)",
    )
    parser.add_argument(
        "--template",
        help="prompt template (default: the checkpoint's own, else the paper's for "
        "the benchmark): llava_mcqa, llava_mcqa_videomme, organism_mcqa, "
        "llava_open_ended (sentence completion), vcgbench_free_form",
    )
    parser.add_argument("--out", required=True, type=user_path, help="output zarr store (resumed if it exists)")
    parser.add_argument(
        "--window",
        type=int,
        help="knockout window size k, at most the model's layer count "
        "(default 9, the paper's; clipped at the ends of smaller models)",
    )
    parser.add_argument("--window-style", default="center", choices=["center", "inverse", "bottom_up", "top_down"])
    parser.add_argument(
        "--layers", help="explicit knockout layer ranges instead of a sweep, e.g. '0-16' (0-based, half-open)"
    )
    parser.add_argument("--limit", type=int, help="samples per task, chosen with --seed")
    parser.add_argument("--tasks", nargs="+", help="task names (default: every task in the data root)")
    parser.add_argument(
        "--samples",
        choices=["correct", "all", "wrong"],
        help="which samples get knocked out (others keep NaN); default: the study's own choice "
        "(correctly answered ones for most studies, as in the paper)",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a study-specific setting (see `mapflow studies`); repeatable",
    )
    parser.add_argument("--frames", type=int, help="frames sampled per video (default: the benchmark's, 8)")
    parser.add_argument(
        "--frame-rule",
        choices=["segment_midpoint", "linspace", "longvideobench"],
        help="frame sampling rule (default: the model family's, else the benchmark's)",
    )
    parser.add_argument("--flows", nargs="+", help="override the study's flows, e.g. video->last cross_frame")
    parser.add_argument(
        "--gt-token",
        default=differences.default("gt_token"),
        choices=["continuation", "vocab"],
        help="how the answer letter becomes a token id (vocab = the released code's lookup)",
    )
    parser.add_argument(
        "--non-option-without-prefix",
        action="store_true",
        help="leave 'Question:' out of the non-option question span, as the released code does",
    )
    parser.add_argument(
        "--plan",
        default="auto",
        help="auto: exact reuse of vision features, cached prefix and clean layers, batched "
        "configurations; naive: one full forward per configuration (the paper code's cost); "
        "screen: first-order estimates from one forward and backward pass; 'screen+verify K': "
        "plus the exact value of the K largest estimated cells per sample",
    )
    parser.add_argument("--heads", help="cut every flow in these query heads only, e.g. 3,7 (0-based)")
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"], help="attention implementation")
    parser.add_argument(
        "--dtype",
        default=differences.default("dtype"),
        help="auto (bfloat16 on a GPU as the paper, float32 on a CPU) | float32 | bfloat16 | float16",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--device-map", help="accelerate placement across GPUs instead of --device, e.g. 'auto'")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 for tiny models)")
    parser.add_argument("--overwrite", action="store_true", help="delete an existing --out store first")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first bad annotation entry instead of recording every bad entry as a failed sample",
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--shard",
        metavar="I/N",
        help="measure only shard I of N (0-based; sample k goes to shard k mod N) into --out, then a run directory "
        "the shards share (OUT/shards/I-of-N.zarr); `mapflow merge OUT` joins them. SLURM: --array=0-(N-1) with "
        "--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT",
    )
    add_remote_arguments(parser)


def cmd_run(args) -> int:
    from ..analysis.resolve import prepare_run
    from ..analysis.runner import run_study
    from ..analysis.shards import parse_shard
    from ..inputs import checks as inputs

    if (code := run_with_executor(args)) is not None:  # --workers / --scheduler: every shard on Dask workers
        return code
    shard = parse_shard(args.shard) if getattr(args, "shard", None) else None  # refused before the model loads
    study = str(user_path(args.study)) if args.study.endswith(".py") else args.study
    inputs.check_store_writable(args.out)  # before the model loads: a read-only store is refused at once
    run = prepare_run(
        study,
        args.model,
        args.data,
        benchmark=args.benchmark,
        template=args.template,
        window=args.window,
        window_style=args.window_style,
        layers=args.layers,
        limit=args.limit,
        tasks=args.tasks,
        samples=args.samples,
        options=_parse_options(args.option),
        frames=args.frames,
        frame_rule=args.frame_rule,
        flows=args.flows,
        gt_token=args.gt_token,
        non_option_includes_prefix=not args.non_option_without_prefix,
        plan=args.plan,
        seed=args.seed,
        attn=args.attn,
        dtype=args.dtype,
        device=args.device,
        device_map=args.device_map,
        # tiny models run ~10x faster single-threaded on shared CPUs
        threads=args.threads if args.threads is not None else (None if args.model else 1),
        strict=args.strict,
        heads=_parse_heads(args.heads),
    )
    if run.samples.bad_entries:
        print(inputs.describe_bad_entries(run.samples.bad_entries), file=sys.stderr)
    if note := inputs.half_precision_note(args.dtype, args.device, args.device_map):
        print(note, file=sys.stderr)
    summary = run_study(
        run.study,
        run.adapter,
        run.samples,
        args.out,
        config=run.config,
        provenance=run.provenance,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        backend=backend_from_args(args, run.adapter.path),
        bad_entries=run.samples.bad_entries,
        shard=shard,
    )
    print(summary.describe())
    return 1 if summary.failed and not summary.done and not summary.skipped else 0  # every sample failed


def cmd_accuracy(args) -> int:
    """Benchmark accuracy through the study runner (stored like any study, so it resumes and records failures)."""
    import xarray as xr

    from ..results.metrics import accuracy_by_task, correctness_disagreements

    args.study, args.samples, args.flows, args.layers, args.option = "accuracy", "all", None, None, []
    if code := cmd_run(args):
        return code
    if args.shard:  # one shard's samples are not the benchmark's accuracy
        print(f"accuracy over the whole run: once every shard is done, `mapflow merge {args.out}`")
        return 0
    ds = xr.open_zarr(args.out, chunks=None)
    for name, value in accuracy_by_task(ds.correct).items():
        print(f"{name:28s} {value:6.1f} %")
    if "correct_token" in ds:
        print(f"{'text vs token rule differ on':28s} {correctness_disagreements(ds):6d} sample(s)")
    return 0


def cmd_plot(args) -> int:
    """The study's own paper figure (PNG + PDF), or its table for table studies."""
    from ..analysis.declaration import DEFAULT, declaration_of
    from ..analysis.runner import available_studies, load_study
    from ..api import open_dataset  # a store, or a run directory of shards (merged; refused while incomplete)
    from ..results.integrity import PROVENANCE_KEY
    from ..viz import figures, tables

    ds = open_dataset(args.store)
    study = ds.attrs[PROVENANCE_KEY].get("study")
    stem = Path(args.png).with_suffix("") if args.png else Path(args.store).with_suffix("")
    # a study's own figure or table
    declared = declaration_of(load_study(study)) if study in available_studies() else DEFAULT
    if declared.table is not None:
        table = declared.table(ds)
        print(table.to_string())
        print(f"wrote {tables.write_table(table, stem.with_suffix('.csv'))}")
        return 0
    if declared.figure is not None and args.variable == "rel_change":
        fig = declared.figure(ds)
    else:
        fig = figures.flow_figure(ds, variable=args.variable)
    from ..results.method import SCREEN_MARK, is_screen_store

    if is_screen_store(ds):  # the figure functions title it so; say it here too
        print(f"note: {args.store} holds {SCREEN_MARK}")
    for path in figures.save_figure(fig, stem):
        print(f"wrote {path}")
    return 0


def cmd_show(args) -> int:
    from ..results.shards import is_run_dir
    from ..results.store import ResultStore, open_dataset

    if is_run_dir(args.store):
        from .run_shards import show_run

        return show_run(args.store)

    ds = open_dataset(args.store)
    print(ds)
    for sample_id, info in ResultStore(args.store).failed_samples().items():
        print(f"failed {sample_id} ({info['task']}): {info['reason']}")
    return 0


def cmd_verify(args) -> int:
    from ..results.shards import is_run_dir
    from ..results.store import verify_store

    if is_run_dir(args.store):
        from .run_shards import verify_run

        return verify_run(args.store, repair=args.repair)

    report = verify_store(args.store, repair=args.repair)
    print(report.describe())
    return 0 if report.ok or report.repaired else 1


def cmd_studies(args) -> int:
    from ..analysis.option_checks import describe_common_options, describe_options
    from ..analysis.runner import available_studies, load_study

    for name in available_studies():
        study = load_study(name)
        doc = (study.__doc__ or "").strip().splitlines()
        print(f"{name:24s} {doc[0] if doc else ''}")
        for line in describe_options(study):
            print(f"{'':26s}--option {line}")
    print("every study also takes:")
    for line in describe_common_options():
        print(f"{'':26s}--option {line}")
    return 0


def cmd_models(args) -> int:
    from ..models import FAMILIES

    print(f"{'family':18s} {'architecture':40s} {'frame unit':28s} token layout")
    for cls in FAMILIES:
        for arch in cls.architectures:
            print(f"{cls.family:18s} {arch:40s} {cls.frame_unit:28s} {cls.token_layout}")
    return 0


def cmd_check(args) -> int:
    from ..api import check, format_check, load_model

    report = check(load_model(args.model, attn_implementation=args.attn, self_test=False))
    print(format_check(report))
    return 0 if report["ok"] else 1


def cmd_demo(args) -> int:
    """The main job on the embedded default: every study of the paper on the shipped organisms, figures, report."""
    import time

    from .demo import run_suite

    started = time.perf_counter()
    manifest = run_suite(Path(args.out_dir), limit=args.limit, window=args.window, only=args.only)
    print(
        f"demo results in {args.out_dir}/: {len(manifest['runs'])} stores, figures/, tables/, report "
        f"{manifest.get('report')}"
    )
    print(f"demo finished in {time.perf_counter() - started:.0f} s (studies {manifest['study_seconds']:.0f} s)")
    return 0


def cmd_report(args) -> int:
    from ..viz.report import build_report

    print(f"wrote {build_report(Path(args.results_dir), args.out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mapflow", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="run a study over a benchmark and store results in zarr")
    add_run_arguments(run)
    add_scale_options(run)  # --workers K / --scheduler ADDRESS: the shards on Dask
    run.set_defaults(func=cmd_run)

    accuracy = sub.add_parser("accuracy", help="benchmark accuracy per task with micro and macro averages")
    add_run_arguments(accuracy, with_study=False)
    accuracy.set_defaults(func=cmd_accuracy)

    plot = sub.add_parser(
        "plot",
        help="draw a store's paper figure (knockout sweeps: mean rel_change vs layer per flow, one panel per task)",
    )
    plot.add_argument("store", type=user_path)
    plot.add_argument("--png", help="output PNG (a PDF is written next to it; default: next to the store)")
    plot.add_argument("--variable", default="rel_change")
    plot.set_defaults(func=cmd_plot)

    show = sub.add_parser(
        "show", help="print a result store's dataset and failed samples, or the state of each shard of a run directory"
    )
    show.add_argument("store", type=user_path)
    show.set_defaults(func=cmd_show)

    verify = sub.add_parser(
        "verify",
        help="check that every committed sample of a store is present once and "
        "readable; --repair drops damaged ones so a rerun measures them again",
    )
    verify.add_argument("store", type=user_path)
    verify.add_argument("--repair", action="store_true", help="drop the damaged samples (a resumed run does this too)")
    verify.set_defaults(func=cmd_verify)

    from .run_shards import add_merge_parser

    add_merge_parser(sub)
    add_ndif_parser(sub)
    from .calibrate import add_calibrate_parser

    add_calibrate_parser(sub)

    studies = sub.add_parser("studies", help="list the available studies")
    studies.set_defaults(func=cmd_studies)

    models = sub.add_parser("models", help="list the supported model families, their frame unit and token layout")
    models.set_defaults(func=cmd_models)

    check = sub.add_parser("check", help="run the adapter's self-tests on a checkpoint and print what they found")
    check.add_argument("model", nargs="?", help="checkpoint directory (default: the embedded organism)")
    check.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    check.set_defaults(func=cmd_check)

    add_organism_parser(sub)
    from .prune import add_prune_parsers

    add_prune_parsers(sub)  # prune-plan, prune-eval (issue 27)

    from .bench import add_bench_parser

    add_bench_parser(sub)
    from .tokenizers import add_tokenizers_parser

    add_tokenizers_parser(sub)

    demo = sub.add_parser("demo", help="run the main job on the embedded default model and benchmark")
    demo.add_argument("--out-dir", default="runs/demo")
    demo.add_argument("--window", type=int, default=3, help="window size (the organisms have 8 layers)")
    demo.add_argument("--limit", type=int, default=10, help="samples per task (expensive studies take a share)")
    demo.add_argument("--only", nargs="+", help="run only these suite runs or studies (the report uses all stores)")
    demo.set_defaults(func=cmd_demo)

    report = sub.add_parser("report", help="assemble a self-contained HTML report from a directory of result stores")
    report.add_argument("results_dir")
    report.add_argument("--out", help="HTML path (default: RESULTS_DIR/report.html)")
    report.set_defaults(func=cmd_report)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if args.command is None:
        args = parser.parse_args(["demo"])
    try:
        return args.func(args)
    except MapflowError as err:
        print(f"mapflow: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: a sentence, not a traceback
        from ..analysis.interrupts import interrupted_message

        print(f"mapflow: {interrupted_message(err)}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

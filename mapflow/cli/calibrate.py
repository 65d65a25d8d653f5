"""The ``mapflow calibrate STUDY`` command: the screen against the exact engine (`mapflow.analysis.calibration`)."""

from __future__ import annotations

from .option_values import parse_heads, parse_options


def calibrate_run(study, model=None, data=None, *, out=None, markdown=False, progress=True, **settings) -> dict:
    """Calibrate ``study`` on ``model``/``data`` (``settings``: `prepare_run` keywords); print the table and, with
    ``out``, write calibration-STUDY.json there. Used by the command and by the demo suite."""
    from ..analysis.calibration import calibrate
    from ..analysis.resolve import prepare_run
    from ..knockout.screen_agreement import format_calibration, write_calibration  # heavy: not on --help's path

    run = prepare_run(study, model, data, **settings)
    report = calibrate(
        run.study, run.adapter, list(run.samples), run.config, run.provenance["model"]["name"], progress=progress
    )
    print(format_calibration(report, markdown=markdown))
    if out:
        print(f"written: {write_calibration(report, out)}")
    return report


def add_calibrate_parser(sub) -> None:
    """The ``calibrate`` subcommand (kept here so the command line gains one line)."""
    parser = sub.add_parser(
        "calibrate",
        help="run a knockout study exactly and as a screen on the same samples; "
        "print and write their agreement and cost per flow",
    )
    parser.add_argument("study", help="a screenable study, e.g. information_flow")
    parser.add_argument("--model", help="checkpoint directory (default: the embedded organism)")
    parser.add_argument("--data", help="benchmark root (default: the embedded benchmark)")
    parser.add_argument("--benchmark", default="tvbench")
    parser.add_argument("--limit", type=int, default=3, help="samples per task (default 3)")
    parser.add_argument("--tasks", nargs="+")
    parser.add_argument("--window", type=int, default=3, help="centred window size (default 3)")
    parser.add_argument("--samples", choices=["correct", "all", "wrong"], help="default: the study's own choice")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="study setting; screen_metric=logodds|logp picks the screen's metric",
    )
    parser.add_argument("--heads", help="restrict every flow to these heads, e.g. 3,7")
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="directory for calibration-STUDY.json (default: print only)")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args) -> int:
    calibrate_run(
        args.study,
        args.model,
        args.data,
        out=args.out,
        markdown=args.markdown,
        progress=not args.no_progress,
        benchmark=args.benchmark,
        window=args.window,
        limit=args.limit,
        tasks=args.tasks,
        samples=args.samples,
        options=parse_options(args.option),
        seed=args.seed,
        attn=args.attn,
        threads=args.threads,
        heads=parse_heads(args.heads),
    )
    return 0

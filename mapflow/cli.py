"""Command line: ``mapflow run | plot | show | studies | models | demo``. With no arguments it runs the demo."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .errors import MapflowError
from .organism.cli_options import add_pathway_train_options, pathway_recipe_options
from .remote.commands import add_ndif_parser, add_remote_arguments, remote_settings_from_args


def _window_from_args(args):
    from .flows import Window

    if args.layers:
        return Window.parse_ranges(args.layers)
    return Window(style=args.window_style, size=args.window)


def add_run_arguments(parser: argparse.ArgumentParser, with_study: bool = True) -> None:
    if with_study:
        parser.add_argument("study", help="study name (see `mapflow studies`) or path to a .py file defining run(ctx)")
    parser.add_argument("--model", help="local Hugging Face checkpoint directory (default: the embedded tiny model)")
    parser.add_argument("--data", help="benchmark root in its published layout (default: the embedded benchmark)")
    parser.add_argument("--benchmark", default="tvbench",
                        help="tvbench | tomato | longvideobench | videomme | vcgbench (default tvbench)")
    parser.add_argument("--template", help="prompt template (default: the checkpoint's own, else the paper's for "
                                           "the benchmark): llava_mcqa, llava_mcqa_videomme, organism_mcqa, "
                                           "llava_open_ended (sentence completion), vcgbench_free_form")
    parser.add_argument("--out", required=True, help="output zarr store (resumed if it exists)")
    parser.add_argument("--window", type=int, default=9, help="knockout window size k (default 9)")
    parser.add_argument("--window-style", default="center", choices=["center", "inverse", "bottom_up", "top_down"])
    parser.add_argument("--layers", help="explicit knockout layer ranges instead of a sweep, e.g. '0-16' (0-based, "
                                         "half-open)")
    parser.add_argument("--limit", type=int, help="samples per task, chosen with --seed")
    parser.add_argument("--tasks", nargs="+", help="task names (default: every task in the data root)")
    parser.add_argument("--samples", choices=["correct", "all", "wrong"],
                        help="which samples get knocked out (others keep NaN); default: the study's own choice "
                             "(correctly answered ones for most studies, as in the paper)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a study-specific setting (see `mapflow studies`); repeatable")
    parser.add_argument("--frames", type=int, help="frames sampled per video (default: the benchmark's, 8)")
    parser.add_argument("--frame-rule", choices=["segment_midpoint", "linspace", "longvideobench"],
                        help="frame sampling rule (default: the benchmark's)")
    parser.add_argument("--flows", nargs="+", help="override the study's flows, e.g. video->last cross_frame")
    parser.add_argument("--gt-token", default="continuation", choices=["continuation", "vocab"],
                        help="how the answer letter becomes a token id (vocab = the released code's lookup)")
    parser.add_argument("--non-option-without-prefix", action="store_true",
                        help="leave 'Question:' out of the non-option question span, as the released code does")
    parser.add_argument("--plan", default="auto", choices=["auto", "naive"],
                        help="auto: exact reuse of vision features, cached prefix and clean layers, batched "
                             "configurations; naive: one full forward per configuration (the paper code's cost)")
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"], help="attention implementation")
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--device-map", help="accelerate placement across GPUs instead of --device, e.g. 'auto'")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 for tiny models)")
    parser.add_argument("--overwrite", action="store_true", help="delete an existing --out store first")
    parser.add_argument("--no-progress", action="store_true")
    add_remote_arguments(parser)


def cmd_run(args) -> int:
    import torch

    from .analysis import StudyConfig
    from .data.benchmarks import get_benchmark
    from .embedded import default_data_dir, default_model_dir
    from .models import load_model
    from .prompts import resolve_template
    from .provenance import run_provenance
    from .runner import load_study, run_study

    study = load_study(args.study)
    benchmark = get_benchmark(args.benchmark)
    model_dir = Path(args.model) if args.model else default_model_dir()
    data_root = Path(args.data) if args.data else default_data_dir()
    if args.threads or not args.model:
        torch.set_num_threads(args.threads or 1)  # tiny models run ~10x faster single-threaded on shared CPUs
    samples = benchmark.loader(data_root, tasks=args.tasks, limit=args.limit, seed=args.seed)
    adapter = load_model(model_dir, attn_implementation=args.attn, dtype=args.dtype, device=args.device,
                         device_map=args.device_map)
    try:
        template = resolve_template(args.template, adapter.prompt_template, benchmark.name)
    except KeyError as err:
        raise MapflowError(err.args[0]) from None
    config = StudyConfig(window=_window_from_args(args), samples=args.samples or getattr(study, "DEFAULT_SAMPLES",
                                                                                          "correct"),
                         options=_parse_options(args.option), seed=args.seed,
                         num_frames=args.frames or benchmark.num_frames, frame_rule=args.frame_rule or
                         benchmark.frame_rule, prompt_template=template.name, gt_token=args.gt_token,
                         non_option_includes_prefix=not args.non_option_without_prefix,
                         flows=tuple(args.flows) if args.flows else None, plan=args.plan)
    study_name = Path(args.study).stem
    run_config = {"study": study_name, **config.to_dict(), "benchmark": benchmark.name, "tasks": args.tasks,
                  "limit": args.limit,
                  "seed": args.seed, "model": str(model_dir.resolve()), "data": str(data_root.resolve()),
                  "attn_implementation": args.attn, "dtype": args.dtype}
    remote = remote_settings_from_args(args, model_dir)
    annotation_files = sorted([*data_root.rglob("*.json"), *data_root.rglob("*.parquet")])
    provenance = run_provenance(study=study_name, model_dir=model_dir, data_root=data_root,
                                annotation_files=annotation_files, seed=args.seed, config=run_config,
                                runtime={"device": args.device, "device_map": args.device_map,
                                         "threads": torch.get_num_threads()})
    summary = run_study(study, adapter, samples, args.out, config=config, provenance=provenance,
                        overwrite=args.overwrite, progress=not args.no_progress, remote=remote)
    print(summary.describe())
    return 0


def _parse_options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise MapflowError(f"cannot read --option '{pair}': write KEY=VALUE")
        options[key.strip()] = value.strip()
    return options


def cmd_accuracy(args) -> int:
    """Benchmark accuracy through the study runner (stored like any study, so it resumes and records failures)."""
    import xarray as xr

    from .metrics import accuracy_by_task

    args.study, args.samples, args.flows, args.layers, args.option = "accuracy", "all", None, None, []
    cmd_run(args)
    ds = xr.open_zarr(args.out)
    for name, value in accuracy_by_task(ds.correct).items():
        print(f"{name:28s} {value:6.1f} %")
    return 0


def cmd_plot(args) -> int:
    """The study's own paper figure (PNG + PDF), or its table for table studies."""
    from . import figures, tables
    from .results import ResultStore, open_dataset

    ds = open_dataset(args.store)
    study = ResultStore(args.store).provenance.get("study")
    stem = Path(args.png).with_suffix("") if args.png else Path(args.store).with_suffix("")
    table_of = {"cross_frame_halves": tables.halves_table, "effective_pathway": tables.pathway_table}
    if study in table_of:
        table = table_of[study](ds)
        print(table.to_string())
        print(f"wrote {tables.write_table(table, stem.with_suffix('.csv'))}")
        return 0
    figure_of = {"window_sizes": figures.window_size_figure, "progressive": figures.progressive_figure,
                 "answer_probability": figures.answer_probability_figure,
                 "logit_lens": figures.keyword_frequency_figure, "attention_maps": figures.attention_map_figure,
                 "verb_anchors": figures.verb_anchor_figure, "failure_cases": figures.failure_split_figure}
    if study in figure_of and args.variable == "rel_change":
        fig = figure_of[study](ds)
    else:
        fig = figures.flow_figure(ds, variable=args.variable)
    for path in figures.save_figure(fig, stem):
        print(f"wrote {path}")
    return 0


def cmd_show(args) -> int:
    from .results import ResultStore, open_dataset

    ds = open_dataset(args.store)
    print(ds)
    for sample_id, info in ResultStore(args.store).failed_samples().items():
        print(f"failed {sample_id} ({info['task']}): {info['reason']}")
    return 0


def cmd_studies(args) -> int:
    from .runner import available_studies, load_study

    for name in available_studies():
        doc = (load_study(name).__doc__ or "").strip().splitlines()
        print(f"{name:24s} {doc[0] if doc else ''}")
    return 0


def cmd_models(args) -> int:
    from .models import FAMILIES

    print(f"{'family':18s} {'architecture':40s} {'frame unit':28s} token layout")
    for cls in FAMILIES:
        for arch in cls.architectures:
            print(f"{cls.family:18s} {arch:40s} {cls.frame_unit:28s} {cls.token_layout}")
    return 0


def cmd_demo(args) -> int:
    """The main job on the embedded default: every study of the paper on the shipped organisms, figures, report."""
    import time

    from .suite import run_suite

    started = time.perf_counter()
    manifest = run_suite(Path(args.out_dir), limit=args.limit, window=args.window, only=args.only)
    print(f"demo results in {args.out_dir}/: {len(manifest['runs'])} stores, figures/, tables/, report "
          f"{manifest.get('report')}")
    print(f"demo finished in {time.perf_counter() - started:.0f} s (studies {manifest['study_seconds']:.0f} s)")
    return 0


def cmd_report(args) -> int:
    from .report import build_report

    print(f"wrote {build_report(Path(args.results_dir), args.out)}")
    return 0


def cmd_organism_train(args) -> int:
    from .organism.recipe import Recipe
    from .organism.train import train_organism

    recipe = Recipe(variant=args.variant, seed=args.seed, steps=args.steps,
                    last_frame_only_share=args.last_frame_only_share, shuffle_options=args.shuffle_options,
                    cross_frame_block_share=args.cross_frame_block_share,
                    **({"task_weights": tuple(args.task_weights)} if args.task_weights else {}),
                    **pathway_recipe_options(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = train_organism(recipe, out, log_path=out / "training_log.jsonl")
    meta = json.loads((path / "mapflow.json").read_text())
    print(f"trained organism-{args.variant} in {meta['training_seconds']} s -> {path}")
    return 0


def cmd_organism_verify(args) -> int:
    from .embedded import default_data_dir
    from .organism.verify import format_summary, verify_organism

    data = Path(args.data) if args.data else default_data_dir()
    summary = verify_organism(args.model, data, args.out, limit=args.limit, progress=not args.no_progress,
                              record=not args.no_record)
    print(format_summary(summary))
    return 0 if summary["all_met"] else 1


def cmd_organism_evaluate(args) -> int:
    from .embedded import default_data_dir
    from .organism.evaluate import evaluate_organism, format_table

    data = Path(args.data) if args.data else default_data_dir()
    summary = evaluate_organism(args.model, data, args.out, progress=not args.no_progress, record=not args.no_record)
    print(format_table(summary["accuracy_percent"], markdown=args.markdown))
    print(f"load + one forward: {summary['load_and_forward_seconds']:.2f} s")
    return 0


def cmd_bench(args) -> int:
    import platform
    import tempfile

    import torch

    from .bench import benchmark, format_report
    from .embedded import DEFAULT_DATA_DIR, TINY_BENCH_DIR, default_model_dir
    from .flows import Window
    from .models import load_model

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        if args.model:
            model_dir, data = Path(args.model), Path(args.data or DEFAULT_DATA_DIR)
        elif args.shape.startswith("llava-"):
            from .models.tiny import build_tiny_llava_next_video

            # LLaVA-NeXT-Video-7B's token layout (8 frames x 12x12 pooled tokens, the paper's long prompt) on a tiny
            # random text model: the sequence shape decides how much an exact plan can save
            model_dir = build_tiny_llava_next_video(Path(scratch) / args.shape, image_size=96, patch_size=4,
                                                    num_layers=args.layers)  # 96 px / 4 / pool 2 = 12x12
            data = Path(args.data or TINY_BENCH_DIR)
        else:
            model_dir, data = default_model_dir(), Path(args.data or DEFAULT_DATA_DIR)
        adapter = load_model(model_dir, attn_implementation=args.attn)
        window = args.window or (3 if adapter.num_layers <= 8 else 9)
        frames = {"llava-24x144": 24}.get(args.shape, 8)
        report = benchmark(adapter, data, limit=args.limit, window=Window("center", window), num_frames=frames,
                           naive=not args.skip_naive)
    cpu = platform.processor() or platform.machine()
    description = (f"mapflow bench: {model_dir.name} ({adapter.num_layers} layers, attn {args.attn}), "
                   f"{torch.get_num_threads()} thread(s), {cpu}")
    print(format_report(report, description))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mapflow", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="run a study over a benchmark and store results in zarr")
    add_run_arguments(run)
    run.set_defaults(func=cmd_run)

    accuracy = sub.add_parser("accuracy", help="benchmark accuracy per task with micro and macro averages")
    add_run_arguments(accuracy, with_study=False)
    accuracy.set_defaults(func=cmd_accuracy)

    plot = sub.add_parser("plot", help="draw a store's paper figure (knockout sweeps: mean rel_change vs layer per "
                                       "flow, one panel per task)")
    plot.add_argument("store")
    plot.add_argument("--png", help="output PNG (a PDF is written next to it; default: next to the store)")
    plot.add_argument("--variable", default="rel_change")
    plot.set_defaults(func=cmd_plot)

    show = sub.add_parser("show", help="print a result store's dataset and failed samples")
    show.add_argument("store")
    show.set_defaults(func=cmd_show)

    add_ndif_parser(sub)

    studies = sub.add_parser("studies", help="list the available studies")
    studies.set_defaults(func=cmd_studies)

    models = sub.add_parser("models", help="list the supported model families, their frame unit and token layout")
    models.set_defaults(func=cmd_models)

    organism = sub.add_parser("organism", help="train or evaluate the model organisms").add_subparsers(
        dest="organism_command", required=True)
    train = organism.add_parser("train", help="train an organism from a seed (a one-off; CPU takes ~30 min)")
    train.add_argument("--variant", choices=["video", "frames", "pathway"], default="video")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--steps", type=int, default=3000)
    train.add_argument("--shuffle-options", action="store_true",
                       help="train on shuffled option order (curriculum); default: canonical order")
    train.add_argument("--last-frame-only-share", type=float, default=0.0,
                       help="share of training samples whose text may read only the last frame")
    train.add_argument("--cross-frame-block-share", type=float, default=1.0,
                       help="frames variant: share of training samples with cross-frame attention blocked")
    train.add_argument("--task-weights", type=float, nargs=5, metavar="W",
                       help="training task mix in the order action_antonym action_sequence moving_direction "
                            "object_count scene_transition (default 0.15 0.15 0.25 0.30 0.15)")
    train.add_argument("--out", required=True, help="checkpoint directory")
    add_pathway_train_options(train)
    train.set_defaults(func=cmd_organism_train)

    verify = organism.add_parser("verify", help="organism-pathway: does the analysis recover the planted routes? "
                                                "(writes the targets into the checkpoint's mapflow.json)")
    verify.add_argument("model")
    verify.add_argument("--data", help="benchmark root (default: the embedded temporal benchmark)")
    verify.add_argument("--out", default="runs/organism-verify", help="directory for the four result stores")
    verify.add_argument("--limit", type=int, help="samples per task (default: all)")
    verify.add_argument("--no-record", action="store_true", help="do not write the summary into mapflow.json")
    verify.add_argument("--no-progress", action="store_true")
    verify.set_defaults(func=cmd_organism_verify)

    evaluate = organism.add_parser("evaluate", help="accuracy per task, clean and with cross-frame attention blocked "
                                                    "in the first half / second half / all layers")
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--data", help="benchmark root (default: the embedded temporal benchmark)")
    evaluate.add_argument("--out", required=True, help="zarr store for the per-sample results")
    evaluate.add_argument("--no-record", action="store_true", help="do not write the summary into mapflow.json")
    evaluate.add_argument("--no-progress", action="store_true")
    evaluate.add_argument("--markdown", action="store_true", help="print the table as markdown")
    evaluate.set_defaults(func=cmd_organism_evaluate)

    bench = sub.add_parser("bench", help="the full paper sweep naive vs optimized in one run: time, work, memory, "
                                         "and the largest p_knockout difference")
    bench.add_argument("--model", help="checkpoint directory (default: --shape)")
    bench.add_argument("--shape", default="organism", choices=["organism", "llava-8x144", "llava-24x144"],
                       help="organism: the embedded organism-video; llava-8x144: a tiny random model with "
                            "LLaVA-NeXT-Video-7B's sequence layout (8 frames x 144 video tokens, paper prompt); "
                            "llava-24x144: the same with 24 frames (~3.5k tokens, the memory check)")
    bench.add_argument("--layers", type=int, default=32, help="decoder layers of the llava-* models (7B: 32)")
    bench.add_argument("--skip-naive", action="store_true",
                       help="run the optimized sweep alone (time and memory only; for sizes where naive is too slow)")
    bench.add_argument("--data", help="benchmark root (default: the shipped one that fits the model)")
    bench.add_argument("--limit", type=int, default=1, help="samples per task")
    bench.add_argument("--window", type=int, help="window size (default 9; 3 for the 8-layer organism)")
    bench.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    bench.add_argument("--threads", type=int, default=1)
    bench.set_defaults(func=cmd_bench)

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


if __name__ == "__main__":
    sys.exit(main())

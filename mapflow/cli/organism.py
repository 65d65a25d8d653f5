"""``mapflow organism train | verify | evaluate`` and the arguments of ``python -m mapflow.organism.synthetic``: the
command lines of the model organisms (`mapflow.organism`) and of the synthetic benchmark they are trained on."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_organism_parser(sub) -> None:
    """The ``organism`` subcommand and its ``train``, ``verify`` and ``evaluate`` commands."""
    organism = sub.add_parser("organism", help="train or evaluate the model organisms").add_subparsers(
        dest="organism_command", required=True
    )
    train = organism.add_parser("train", help="train an organism from a seed (a one-off; CPU takes ~30 min)")
    train.add_argument("--variant", choices=["video", "frames", "pathway"], default="video")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--steps", type=int, default=3000)
    train.add_argument(
        "--shuffle-options",
        action="store_true",
        help="train on shuffled option order (curriculum); default: canonical order",
    )
    train.add_argument(
        "--last-frame-only-share",
        type=float,
        default=0.0,
        help="share of training samples whose text may read only the last frame",
    )
    train.add_argument(
        "--cross-frame-block-share",
        type=float,
        default=1.0,
        help="frames variant: share of training samples with cross-frame attention blocked",
    )
    train.add_argument(
        "--task-weights",
        type=float,
        nargs=5,
        metavar="W",
        help="training task mix in the order action_antonym action_sequence moving_direction "
        "object_count scene_transition (default 0.15 0.15 0.25 0.30 0.15)",
    )
    train.add_argument("--out", required=True, help="checkpoint directory")
    train.add_argument(
        "--stop-after",
        type=int,
        help="end after this step, keeping the --steps learning-rate schedule "
        "(regenerates a phase that was stopped at a checkpoint)",
    )
    add_pathway_train_options(train)
    train.set_defaults(func=cmd_organism_train)

    verify = organism.add_parser(
        "verify",
        help="organism-pathway: does the analysis recover the planted routes? "
        "(writes the targets into the checkpoint's mapflow.json)",
    )
    verify.add_argument("model")
    verify.add_argument("--data", help="benchmark root (default: the embedded temporal benchmark)")
    verify.add_argument("--out", default="runs/organism-verify", help="directory for the five result stores")
    verify.add_argument("--limit", type=int, help="samples per task (default: all)")
    verify.add_argument("--no-record", action="store_true", help="do not write the summary into mapflow.json")
    verify.add_argument("--no-progress", action="store_true")
    verify.set_defaults(func=cmd_organism_verify)

    evaluate = organism.add_parser(
        "evaluate",
        help="accuracy per task, clean and with cross-frame attention blocked "
        "in the first half / second half / all layers",
    )
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--data", help="benchmark root (default: the embedded temporal benchmark)")
    evaluate.add_argument("--out", required=True, help="zarr store for the per-sample results")
    evaluate.add_argument("--no-record", action="store_true", help="do not write the summary into mapflow.json")
    evaluate.add_argument("--no-progress", action="store_true")
    evaluate.add_argument("--markdown", action="store_true", help="print the table as markdown")
    evaluate.set_defaults(func=cmd_organism_evaluate)


def add_pathway_train_options(parser) -> None:
    group = parser.add_argument_group("variant pathway")
    group.add_argument("--init-from", help="start from this checkpoint's weights, tokenizer and processor")
    group.add_argument("--batch-size", type=int, help="planted-route rows per batch (default 32)")
    group.add_argument("--open-rows", type=int, help="rows repeated with every edge open (default 8)")
    group.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    group.add_argument("--warmup-steps", type=int, help="linear warmup steps (default 100)")
    group.add_argument("--lens-weight", type=float, help="weight of the grounded-lens objective (default 0.5)")
    group.add_argument(
        "--option-answer-layer",
        type=int,
        help="layer after which the options block learns the answer letter (default: none)",
    )
    group.add_argument(
        "--open-cell-share",
        type=float,
        help="in the open rows, probability that each blocked (route, layer) cell opens (default 1: all)",
    )
    group.add_argument(
        "--question-reads-last-frame",
        action="store_true",
        default=None,
        help="planted video->question edges come only from the last frame's tokens",
    )
    group.add_argument("--consistency-weight", type=float, help="weight of the open rows' agreement (default 1)")
    group.add_argument("--final-lr-fraction", type=float, help="cosine floor as a share of the peak (default 0.1)")
    group.add_argument("--eval-every", type=int, help="steps between held-out evaluations and checkpoints (250)")
    group.add_argument("--eval-per-task", type=int, help="held-out items per task (default 64)")


def pathway_recipe_options(args) -> dict:
    """The Recipe fields the options above set (only those given, so the Recipe's defaults stay the defaults)."""
    names = (
        "init_from",
        "batch_size",
        "open_rows",
        "lr",
        "warmup_steps",
        "lens_weight",
        "option_answer_layer",
        "open_cell_share",
        "question_reads_last_frame",
        "consistency_weight",
        "final_lr_fraction",
        "eval_every",
        "eval_per_task",
    )
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def cmd_organism_train(args) -> int:
    from ..organism.recipe import Recipe
    from ..organism.train import train_organism

    recipe = Recipe(
        variant=args.variant,
        seed=args.seed,
        steps=args.steps,
        last_frame_only_share=args.last_frame_only_share,
        shuffle_options=args.shuffle_options,
        cross_frame_block_share=args.cross_frame_block_share,
        **({"task_weights": tuple(args.task_weights)} if args.task_weights else {}),
        **pathway_recipe_options(args),
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = train_organism(recipe, out, log_path=out / "training_log.jsonl", stop_after=args.stop_after)
    meta = json.loads((path / "mapflow.json").read_text())
    print(f"trained organism-{args.variant} in {meta['training_seconds']} s -> {path}")
    return 0


def cmd_organism_verify(args) -> int:
    from ..embedded import default_data_dir
    from ..organism.verify import format_summary, verify_organism

    data = Path(args.data) if args.data else default_data_dir()
    summary = verify_organism(
        args.model, data, args.out, limit=args.limit, progress=not args.no_progress, record=not args.no_record
    )
    print(format_summary(summary))
    return 0 if summary["all_met"] else 1


def cmd_organism_evaluate(args) -> int:
    from ..embedded import default_data_dir
    from ..organism.evaluate import evaluate_organism, format_table

    data = Path(args.data) if args.data else default_data_dir()
    summary = evaluate_organism(args.model, data, args.out, progress=not args.no_progress, record=not args.no_record)
    print(format_table(summary["accuracy_percent"], markdown=args.markdown))
    print(f"load + one forward: {summary['load_and_forward_seconds']:.2f} s")
    return 0


def synthetic_parser() -> argparse.ArgumentParser:
    """The arguments of ``python -m mapflow.organism.synthetic`` (run by `mapflow.organism.synthetic.main`)."""
    parser = argparse.ArgumentParser(
        prog="python -m mapflow.organism.synthetic",
        description="Write a deterministic TVBench-layout dataset: the tiny 2-task one (default) "
        "or the 5-task synthetic temporal benchmark.",
    )
    parser.add_argument("outdir", type=Path, help="dataset root to create (json/ and video/ go inside)")
    parser.add_argument(
        "--benchmark", choices=("tiny", "temporal"), default="tiny", help="which dataset (default tiny)"
    )
    parser.add_argument("--per-task", type=int, default=None, help="samples per task (default 4 tiny, 40 temporal)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 0 tiny, 1234 temporal)")
    parser.add_argument(
        "--canonical-options",
        action="store_true",
        help="temporal: keep each task's canonical option order instead of shuffling",
    )
    return parser

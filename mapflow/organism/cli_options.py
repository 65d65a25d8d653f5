"""Command-line options of ``mapflow organism train`` for the ``pathway`` variant (kept out of cli.py)."""

from __future__ import annotations


def add_pathway_train_options(parser) -> None:
    group = parser.add_argument_group("variant pathway")
    group.add_argument("--init-from", help="start from this checkpoint's weights, tokenizer and processor")
    group.add_argument("--batch-size", type=int, help="planted-route rows per batch (default 32)")
    group.add_argument("--open-rows", type=int, help="rows repeated with every edge open (default 8)")
    group.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    group.add_argument("--warmup-steps", type=int, help="linear warmup steps (default 100)")
    group.add_argument("--lens-weight", type=float, help="weight of the grounded-lens objective (default 0.5)")
    group.add_argument("--option-answer-layer", type=int,
                       help="layer after which the options block learns the answer letter (default: none)")
    group.add_argument("--open-cell-share", type=float,
                       help="in the open rows, probability that each blocked (route, layer) cell opens (default 1: all)")
    group.add_argument("--question-reads-last-frame", action="store_true", default=None,
                       help="planted video->question edges come only from the last frame's tokens")
    group.add_argument("--consistency-weight", type=float, help="weight of the open rows' agreement (default 1)")
    group.add_argument("--final-lr-fraction", type=float, help="cosine floor as a share of the peak (default 0.1)")
    group.add_argument("--eval-every", type=int, help="steps between held-out evaluations and checkpoints (250)")
    group.add_argument("--eval-per-task", type=int, help="held-out items per task (default 64)")


def pathway_recipe_options(args) -> dict:
    """The Recipe fields the options above set (only those given, so the Recipe's defaults stay the defaults)."""
    names = ("init_from", "batch_size", "open_rows", "lr", "warmup_steps", "lens_weight", "option_answer_layer",
             "open_cell_share", "question_reads_last_frame", "consistency_weight", "final_lr_fraction",
             "eval_every", "eval_per_task")
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}

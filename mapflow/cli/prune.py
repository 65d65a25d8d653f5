"""``mapflow prune-plan`` and ``mapflow prune-eval``: from a measured map to a pruned model, and what it buys."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..inputs.checks import user_path

PLAN_HELP = """Derive a pruning plan from knockout stores: the layer L after which no measured route reads the video.
Video-reading flows: those whose source is the video (video->question, video->last, ...) and cross_frame. A knockout
cell is harmful when some task's mean rel_change over its measured samples is below --threshold % (default -5, the
paper's significance rule). Rule harmless_windows (default): a layer is unread when some harmless knocked-out window
contains it (a harmful window with no read layer counts whole); window_centre: the centres of harmful windows are read
(the paper's reading of its window sweeps); window_end: their last layers (conservative). L = the last layer read;
every video token leaves the sequence after layer L. An effective_pathway store gives L = the last open layer of its
cross_frame and video_question routes. --frame-local: the layers up to L where cross_frame is unread attend within
each frame. The plan JSON records the rule, the threshold, the layers read per flow and each store's provenance hash."""


def add_prune_parsers(sub) -> None:
    plan = sub.add_parser(
        "prune-plan",
        help="a pruning plan from information_flow / cross_frame / effective_pathway stores",
        description=PLAN_HELP,
    )
    plan.add_argument("stores", nargs="*", type=user_path, help="result stores of one model")
    plan.add_argument("--threshold", type=float, default=-5.0, help="harmful below this mean change %% (default -5)")
    plan.add_argument("--rule", default="harmless_windows", choices=["harmless_windows", "window_centre", "window_end"])
    plan.add_argument(
        "--frame-local", action="store_true", help="also make the layers cross_frame leaves unread frame-local"
    )
    plan.add_argument("--drop-video-after", type=int, metavar="L", help="give L explicitly (stores, if any, recorded)")
    plan.add_argument("--out", type=user_path, default=Path("plan.json"), help="plan JSON (default plan.json)")
    plan.set_defaults(func=cmd_prune_plan)

    ev = sub.add_parser(
        "prune-eval",
        help="accuracy, agreement, prefill FLOPs and time: the plan vs unpruned vs FastV-style pruning",
        description="Per sample: the plan, no pruning and FastV-style pruning (the R share of least-attended video "
        "tokens dropped after layer K, K and R swept to bracket the plan's FLOPs), scored as mapflow's clean run "
        "scores a sample; written as a store (dims sample, pruning: one entry per method) with a figure and a table next to it.",
    )
    ev.add_argument("--plan", required=True, type=user_path, help="plan JSON from `mapflow prune-plan`")
    ev.add_argument("--model", type=user_path, help="checkpoint directory (default: the embedded organism)")
    ev.add_argument("--data", type=user_path, help="benchmark root (default: the embedded benchmark)")
    ev.add_argument("--benchmark", default=None, help="benchmark name (default tvbench)")
    ev.add_argument("--limit", type=int, help="samples per task")
    ev.add_argument("--tasks", nargs="+")
    ev.add_argument("--fastv-layers", type=int, nargs="+", metavar="K", help="FastV layers (default: bracket the plan)")
    ev.add_argument("--fastv-ratios", type=float, nargs="+", metavar="R", help="FastV shares dropped, e.g. 0.5 0.75")
    ev.add_argument(
        "--out", type=user_path, default=Path("prune_eval.zarr"), help="output store (resumed if it exists)"
    )
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--dtype", default=None)
    ev.add_argument("--threads", type=int)
    ev.add_argument("--seed", type=int, default=42)
    ev.add_argument("--overwrite", action="store_true")
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(func=cmd_prune_eval)


def cmd_prune_plan(args: argparse.Namespace) -> int:
    from ..pruning.plan import prune_plan

    plan = prune_plan(
        args.stores,
        threshold=args.threshold,
        rule=args.rule,
        frame_local=args.frame_local,
        drop_video_after=args.drop_video_after,
    )
    print(plan.describe())
    print(f"wrote {plan.save(args.out)}")
    return 0


def cmd_prune_eval(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..pruning.evaluate import prune_eval
    from ..pruning.summary import verdict
    from ..viz.figures import save_figure
    from ..viz.pruning import prune_figure, prune_table

    ds = prune_eval(
        args.plan,
        args.model,
        args.data,
        out=args.out,
        benchmark=args.benchmark,
        limit=args.limit,
        tasks=args.tasks,
        fastv_layers=args.fastv_layers,
        fastv_ratios=args.fastv_ratios,
        seed=args.seed,
        threads=args.threads,
        device=args.device,
        dtype=args.dtype,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    stem = Path(args.out).with_suffix("")
    table = prune_table(ds)
    table.to_csv(f"{stem}.csv")
    paths = save_figure(prune_figure(ds), stem)
    with pd.option_context("display.width", 200, "display.max_columns", 12):
        print(table.iloc[:, :9].round(1).to_string())
    print(verdict(ds)["text"])
    print(f"store {args.out}; table {stem}.csv; figure {', '.join(str(p) for p in paths)}")
    return 0


DEMO_SOURCES = ("information_flow-pathway", "cross_frame-pathway")  # the planted organism's own map in the demo
DEMO_STORE = "prune_eval-pathway"


def demo_prune(out_dir: Path, *, limit: int) -> dict | None:
    """The demo's pruning run: the plan from the pathway organism's information_flow and cross_frame stores (frame-local
    layers too), evaluated on a share of the suite's samples (``limit`` per task, about 0.4 of it); None when the
    suite did not write those stores."""
    from ..embedded import organism_dir
    from ..pruning.evaluate import prune_eval
    from ..pruning.plan import prune_plan

    sources = [out_dir / f"{name}.zarr" for name in DEMO_SOURCES]
    if not all(path.exists() for path in sources):
        return None
    plan = prune_plan(sources, frame_local=True)
    plan.save(out_dir / f"{DEMO_STORE}-plan.json")
    settings = {"limit": max(1, round(0.4 * limit)), "threads": 1}
    prune_eval(plan, organism_dir("pathway"), out=out_dir / f"{DEMO_STORE}.zarr", progress=False, **settings)
    return {
        "name": DEMO_STORE,
        "study": "prune_eval",
        "model": "organism-pathway",
        "store": f"{DEMO_STORE}.zarr",
        "settings": settings,
        "plan": plan.spec.label(),
    }

"""Head-level knockout: each flow cut in one query head at a time, in a window of layers around each layer.

Stores ``rel_change(sample, flow, layer, head)``: which heads of which layers carry a flow. Flows: the paper's
information flows (``--flows`` overrides). Option ``heads`` (comma-separated, default every head) limits the sweep.
``--heads`` restricts any other study's flows to a fixed set of heads instead.
"""

from mapflow.study.context import StudyContext, knockout_sweep, stack_results
from mapflow.knockout.engine import check_heads
from mapflow.knockout.flows import PAPER_FLOWS

SCREENABLE = True  # `--plan screen` estimates its cells (mapflow.knockout.screen)
FLOWS = tuple(PAPER_FLOWS["information_flow"])


def heads(ctx: StudyContext) -> list[int]:
    text = ctx.config.option("heads")
    chosen = range(ctx.adapter.num_heads) if text is None else [int(h) for h in text.split(",")]
    return list(check_heads(chosen, ctx.adapter.num_heads, option="--option heads"))


# What `mapflow plot` and the demo suite (`mapflow.cli.demo.organism_suite`) take from this study:
DEMO = (  # its runs in the demo suite; `order` places them in the suite
    {"order": 210, "name": "head_sweep-video", "window": True, "limit_scale": 0.2},
)


def run(ctx: StudyContext):
    chosen = heads(ctx)
    return stack_results([knockout_sweep(ctx, FLOWS, heads=(h,)) for h in chosen], "head", chosen)

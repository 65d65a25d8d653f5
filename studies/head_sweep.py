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


# Its sections of `mapflow report` (mapflow.viz.report.study_sections): `order` places them in the page.
def report_section(w, stores):
    """Beyond the paper: one flow knocked out in a single head at a time."""
    import numpy as np

    from mapflow.viz import figures

    for st in stores:
        s = w.section(f"Heads, {st.model}", "beyond the paper")
        w.figure(s, f"heads_{st.model}", lambda st=st: figures.head_figure(st.ds),
                 "One flow knocked out in a single head at a time, in the window around each layer: mean % change")
        mean = st.ds["rel_change"].mean("sample", skipna=True)
        if np.isfinite(mean.values).any():
            cell = mean.where(mean == mean.min(), drop=True)
            w.reading(s, f"Strongest single head: {cell['flow'].values[0]} in head {int(cell['head'][0])} "
                         f"around layer {int(cell['layer'][0]) + 1}, {float(mean.min()):.2f} %.")


REPORT = ({"order": 180, "section": report_section},)

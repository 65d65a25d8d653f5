"""Head-level knockout: each flow cut in one query head of one layer at a time.

Stores ``rel_change(sample, flow, layer, head)``: which heads of which layers carry a flow. A head index names a
different head in every layer (heads are not aligned across layers), so by default each cell cuts head h in layer l
only (window 1). ``--option window=K`` cuts head h in the K layers centred on l instead (the same index in each, as a
coarser screen); the global ``--window`` / ``--layers`` are refused here so that they cannot be mistaken for it.
Flows: the paper's information flows (``--flows`` overrides). Option ``heads`` (comma-separated, default every head)
limits the sweep. ``--heads`` restricts any other study's flows to a fixed set of heads instead.
"""

import mapflow as mf
from mapflow.analysis.context import StudyContext
from mapflow.analysis.options import StudyOption, whole_number, whole_numbers
from mapflow.differences import default
from mapflow.errors import KnockoutConfigError
from mapflow.knockout.engine import check_heads
from mapflow.knockout.flows import PAPER_FLOWS, Window
from mapflow.viz import figures

FLOWS = tuple(PAPER_FLOWS["information_flow"])
OPTIONS = {
    "heads": StudyOption(
        "the heads swept, comma-separated, 0-based (not set: every head)", parse=whole_numbers(0), expects="h1,h2,..."
    ),
    "window": StudyOption(
        "layers cut around each sweep layer, the same head index in each",
        default("window"),
        parse=whole_number(1),
        expects="K >= 1 (at most the layer count)",
    ),
}


def heads(ctx: StudyContext) -> list[int]:
    text = ctx.config.option("heads")
    chosen = range(ctx.adapter.num_heads) if text is None else [int(h) for h in text.split(",")]
    return list(check_heads(chosen, ctx.adapter.num_heads, option="--option heads"))


DEFAULT_WINDOW = int(default("window"))  # one head of one layer: heads are not aligned across layers


def head_window(option, num_layers: int) -> Window:
    """``--option window=K``: the K layers centred on each sweep layer (default 1)."""
    text = option("window", default("window"))
    try:
        size = int(text)
    except ValueError:
        raise KnockoutConfigError(f"--option window={text}: give a whole number of layers") from None
    if not 1 <= size <= num_layers:
        raise KnockoutConfigError(f"--option window={text}: give 1..{num_layers} layers")
    return Window("center", size)


def check_options(adapter, config, *, window_given: bool = False) -> None:
    """Before the store exists (`mapflow.analysis.run_checks.check_run_options`)."""
    if window_given:
        raise KnockoutConfigError(
            "head_sweep cuts one head in one layer by default; its window is --option "
            "window=K (K layers centred on each layer, the same head index in each), not "
            "--window / --layers"
        )
    head_window(config.option, adapter.num_layers)


def report_section(w, stores):
    """Beyond the paper: one flow knocked out in a single head at a time."""
    import numpy as np

    from mapflow.viz import figures

    for st in stores:
        s = w.section(f"Heads, {st.model}", "beyond the paper")
        w.figure(
            s,
            f"heads_{st.model}",
            lambda st=st: figures.head_figure(st.ds),
            f"One flow knocked out in a single head at a time ({figures.head_window_text(st.ds)}): mean % change",
        )
        mean = st.ds["rel_change"].mean("sample", skipna=True)
        if np.isfinite(mean.values).any():
            cell = mean.where(mean == mean.min(), drop=True)
            where = "of layer" if figures.head_window_size(st.ds) == 1 else "around layer"
            w.reading(
                s,
                f"Strongest single head: {cell['flow'].values[0]} in head {int(cell['head'][0])} "
                f"{where} {int(cell['layer'][0]) + 1}, {float(mean.min()):.2f} %.",
            )


@mf.study(
    flows=FLOWS,
    figure=figures.head_figure,
    screenable=True,
    options=OPTIONS,
    check=check_options,
    report=({"order": 180, "section": report_section},),
    demo=(  # its runs in the demo suite; `order` places them in the suite
        {"order": 210, "name": "head_sweep-video", "limit_scale": 0.2},
    ),
)
def run(ctx: StudyContext):
    chosen = heads(ctx)
    window = head_window(ctx.config.option, ctx.adapter.num_layers)
    return ctx.stack([ctx.sweep(FLOWS, heads=(h,), window=window) for h in chosen], "head", chosen)

"""One study shape shared by several shipped studies: a paper group of flows (`mapflow.knockout.flows.PAPER_FLOWS`)
swept around each layer, drawn with the flow figure, and one report section per store.

`flow_sweep_study` builds the declared ``run(ctx)``; a study module holds only its doc and one call, e.g.
``run = flow_sweep_study("into_true_option", ...)`` (`into_true_option`, `question_options_to_last`).
"""

import mapflow as mf
from mapflow.knockout.flows import PAPER_FLOWS
from mapflow.viz import figures


def flow_sweep_study(name: str, flows: str, *, title: str, paper: str, report_order: int, demo_order: int):
    """The declared ``run(ctx)`` of study ``name``: the flows of ``PAPER_FLOWS[flows]`` swept around each layer, its
    report section (``title``, ``paper``: e.g. "Fig. 7") at ``report_order`` and one demo run on the planted
    organism at ``demo_order``."""
    swept = tuple(PAPER_FLOWS[flows])

    def report_section(w, stores):
        from mapflow.viz.report import knockout_flow_section

        for st in stores:
            knockout_flow_section(w, st, name, title, paper)

    report_section.__doc__ = f"{paper}."

    @mf.study(
        flows=swept,
        figure=figures.flow_figure,
        screenable=True,
        options={},  # only the options every study takes (mapflow.analysis.option_checks.COMMON_OPTION_NAMES)
        report=({"order": report_order, "section": report_section},),
        demo=({"order": demo_order, "name": f"{name}-pathway", "variant": "pathway", "window": True},),
    )
    def run(ctx):
        return ctx.sweep(swept)

    run.__qualname__ = run.__name__ = "run"
    return run

"""Video / question / last-position information flow (paper §3.3, Fig. 3).

Four flows, each knocked out alone in a window around each layer: video->question, video->last, question->last
(question = the whole question block with its options) and last->last (the last token's edge to itself).
"""

import mapflow as mf
from mapflow.analysis.context import StudyContext
from mapflow.knockout.flows import PAPER_FLOWS
from mapflow.viz import figures

OPTIONS = {}  # only the options every study takes (mapflow.analysis.option_checks.COMMON_OPTION_NAMES)

FLOWS = tuple(PAPER_FLOWS["information_flow"])


def report_section(w, stores):
    """Fig. 3 and Table E: the flows between video, question and last position, per layer interval too."""
    from mapflow.viz import tables
    from mapflow.viz.report import knockout_flow_section, layer_interval

    for st in stores:
        s = knockout_flow_section(w, st, "information_flow", "Video, question and last position", "Fig. 3")
        interval = layer_interval(st.ds)
        w.table(
            s,
            f"tableE_intervals_{st.model}",
            tables.mark_significant(tables.interval_table(st.ds, interval=interval)),
            f"Mean change (%) per {interval}-layer interval; * marks the paper's significance rule (< -5 %)",
        )


def open_ended_report_section(w, stores):
    """Fig. Q: the same on sentence completion (appendix C.1)."""
    from mapflow.viz import figures
    from mapflow.viz.report import open_ended_section

    for st in stores:
        open_ended_section(w, st, "information_flow", "Fig. Q", figures.flow_figure)


@mf.study(
    flows=FLOWS,
    figure=figures.flow_figure,
    screenable=True,
    options=OPTIONS,
    report=(
        {"order": 50, "section": report_section},
        {"order": 140, "section": open_ended_report_section, "stores": "open_ended"},
    ),
    demo=(  # its runs in the demo suite; `order` places them in the suite
        {"order": 30, "name": "information_flow-pathway", "variant": "pathway", "window": True},
        {
            "order": 170,
            "name": "open_ended_information_flow-video",
            "window": True,
            "open_ended": True,
            "limit_scale": 0.5,
        },
    ),
)
def run(ctx: StudyContext):
    return ctx.sweep(FLOWS)

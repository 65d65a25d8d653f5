"""Video / question / last-position information flow (paper §3.3, Fig. 3).

Four flows, each knocked out alone in a window around each layer: video->question, video->last, question->last
(question = the whole question block with its options) and last->last (the last token's edge to itself).
"""

from mapflow.study.context import StudyContext, knockout_sweep
from mapflow.knockout.flows import PAPER_FLOWS

OPTIONS = {}  # only the options every study takes (mapflow.study.options.COMMON_OPTION_NAMES)

SCREENABLE = True  # `--plan screen` estimates its cells (mapflow.knockout.screen)
FLOWS = tuple(PAPER_FLOWS["information_flow"])


# What `mapflow plot` and the demo suite (`mapflow.cli.demo.organism_suite`) take from this study:
FIGURE = "flow_figure"  # the mapflow.viz.figures function `mapflow plot` draws
DEMO = (  # its runs in the demo suite; `order` places them in the suite
    {"order": 30, "name": "information_flow-pathway", "variant": "pathway", "window": True},
    {"order": 170, "name": "open_ended_information_flow-video", "window": True, "open_ended": True,
     "limit_scale": 0.5},
)


def run(ctx: StudyContext):
    return knockout_sweep(ctx, FLOWS)


# Its sections of `mapflow report` (mapflow.viz.report.study_sections): `order` places them in the page.
def report_section(w, stores):
    """Fig. 3 and Table E: the flows between video, question and last position, per layer interval too."""
    from mapflow.viz import tables
    from mapflow.viz.report import knockout_flow_section, layer_interval

    for st in stores:
        s = knockout_flow_section(w, st, "information_flow", "Video, question and last position", "Fig. 3")
        interval = layer_interval(st.ds)
        w.table(s, f"tableE_intervals_{st.model}",
                tables.mark_significant(tables.interval_table(st.ds, interval=interval)),
                f"Mean change (%) per {interval}-layer interval; * marks the paper's significance rule (< -5 %)")


def open_ended_report_section(w, stores):
    """Fig. Q: the same on sentence completion (appendix C.1)."""
    from mapflow.viz import figures
    from mapflow.viz.report import open_ended_section

    for st in stores:
        open_ended_section(w, st, "information_flow", "Fig. Q", figures.flow_figure)


REPORT = (
    {"order": 50, "section": report_section},
    {"order": 140, "section": open_ended_report_section, "stores": "open_ended"},
)

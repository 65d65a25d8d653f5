"""Flows into the true option (paper §3.3, Fig. 7): video -> non-option question, non-option question -> true
option, video -> true option. Where does the true option's text pick up the video evidence?
"""

from mapflow.study.context import StudyContext, knockout_sweep
from mapflow.knockout.flows import PAPER_FLOWS

OPTIONS = {}  # only the options every study takes (mapflow.study.options.COMMON_OPTION_NAMES)

SCREENABLE = True  # `--plan screen` estimates its cells (mapflow.knockout.screen)
FLOWS = tuple(PAPER_FLOWS["into_true_option"])


# What `mapflow plot` and the demo suite (`mapflow.cli.demo.organism_suite`) take from this study:
FIGURE = "flow_figure"  # the mapflow.viz.figures function `mapflow plot` draws
DEMO = (  # its runs in the demo suite; `order` places them in the suite
    {"order": 50, "name": "into_true_option-pathway", "variant": "pathway", "window": True},
)


def run(ctx: StudyContext):
    return knockout_sweep(ctx, FLOWS)


# Its sections of `mapflow report` (mapflow.viz.report.study_sections): `order` places them in the page.
def report_section(w, stores):
    """Fig. 7."""
    from mapflow.viz.report import knockout_flow_section

    for st in stores:
        knockout_flow_section(w, st, "into_true_option", "Flows into the true option", "Fig. 7")


REPORT = ({"order": 70, "section": report_section},)

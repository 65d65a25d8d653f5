"""Question and options -> last position (paper §3.3, Fig. 6): which part of the question block the answer reads.

Three flows: the non-option question, the true option and the false options (all of them) -> the last position.
"""

from mapflow.study.context import StudyContext, knockout_sweep
from mapflow.knockout.flows import PAPER_FLOWS

OPTIONS = {}  # only the options every study takes (mapflow.study.options.COMMON_OPTION_NAMES)

SCREENABLE = True  # `--plan screen` estimates its cells (mapflow.knockout.screen)
FLOWS = tuple(PAPER_FLOWS["question_and_options_to_last"])


# What `mapflow plot` and the demo suite (`mapflow.cli.demo.organism_suite`) take from this study:
FIGURE = "flow_figure"  # the mapflow.viz.figures function `mapflow plot` draws
DEMO = (  # its runs in the demo suite; `order` places them in the suite
    {"order": 40, "name": "question_options_to_last-pathway", "variant": "pathway", "window": True},
)


def run(ctx: StudyContext):
    return knockout_sweep(ctx, FLOWS)


# Its sections of `mapflow report` (mapflow.viz.report.study_sections): `order` places them in the page.
def report_section(w, stores):
    """Fig. 6."""
    from mapflow.viz.report import knockout_flow_section

    for st in stores:
        knockout_flow_section(w, st, "question_options_to_last", "Question and options to the last position", "Fig. 6")


REPORT = ({"order": 60, "section": report_section},)

"""Video / question / last-position information flow (paper §3.3, Fig. 3).

Four flows, each knocked out alone in a window around each layer: video->question, video->last, question->last
(question = the whole question block with its options) and last->last (the last token's edge to itself).
"""

from mapflow.study.context import StudyContext, knockout_sweep
from mapflow.knockout.flows import PAPER_FLOWS

SCREENABLE = True  # `--plan screen` estimates its cells (mapflow.knockout.screen)
FLOWS = tuple(PAPER_FLOWS["information_flow"])


# What `mapflow plot` and the demo suite (`mapflow.cli.demo.organism_suite`) take from this study:
FIGURE = "flow_figure"  # the mapflow.viz.figures function `mapflow plot` draws
DEMO = (  # its runs in the demo suite; `order` places them in the suite
    {"order": 30, "name": "information_flow-video", "window": True},
    {"order": 170, "name": "open_ended_information_flow-video", "window": True, "open_ended": True,
     "limit_scale": 0.5},
)


def run(ctx: StudyContext):
    return knockout_sweep(ctx, FLOWS)

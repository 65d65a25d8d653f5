"""Video / question / last-position information flow (paper §3.3, Fig. 3).

Four flows, each knocked out alone in a window around each layer: video->question, video->last, question->last
(question = the whole question block with its options) and last->last (the last token's edge to itself).
"""

from mapflow.analysis import StudyContext, knockout_sweep
from mapflow.flows import PAPER_FLOWS

SCREENABLE = True  # `--plan screen` estimates its cells (mapflow.screen)
FLOWS = tuple(PAPER_FLOWS["information_flow"])


def run(ctx: StudyContext):
    return knockout_sweep(ctx, FLOWS)

"""Cross-frame knockout (paper §3.2, Fig. 2): each frame's video tokens may not read earlier frames.

Blocks, in a window of layers around each layer, every edge from an earlier frame's keys to a later frame's queries;
within-frame attention stays. A drop in the answer probability says the model builds its answer from interactions
between frames in those layers.
"""

from mapflow.study.context import StudyContext, knockout_sweep

SCREENABLE = True  # `--plan screen` estimates its cells (mapflow.knockout.screen)
FLOWS = ("cross_frame",)


def run(ctx: StudyContext):
    return knockout_sweep(ctx, FLOWS)

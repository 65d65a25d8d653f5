"""Cross-frame knockout (paper §3.2, Fig. 2): each frame's video tokens may not read earlier frames.

Blocks, in a window of layers around each layer, every edge from an earlier frame's keys to a later frame's queries;
within-frame attention stays. A drop in the answer probability says the model builds its answer from interactions
between frames in those layers.
"""

from mapflow.study.context import StudyContext, knockout_sweep

SCREENABLE = True  # `--plan screen` estimates its cells (mapflow.knockout.screen)
FLOWS = ("cross_frame",)


# What `mapflow plot` and the demo suite (`mapflow.cli.demo.organism_suite`) take from this study:
FIGURE = "flow_figure"  # the mapflow.viz.figures function `mapflow plot` draws
DEMO = (  # its runs in the demo suite; `order` places them in the suite
    {"order": 10, "name": "cross_frame-video", "window": True},
    {"order": 20, "name": "cross_frame-frames", "variant": "frames", "window": True},
    {"order": 160, "name": "open_ended_cross_frame-video", "window": True, "open_ended": True, "limit_scale": 0.5},
)


def run(ctx: StudyContext):
    return knockout_sweep(ctx, FLOWS)

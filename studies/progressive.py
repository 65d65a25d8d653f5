"""Progressive cross-frame blocking (paper §F.4, Fig. V): bottom-up (layers 1..l) and top-down (layers l..L).

Reported as accuracy after knockout per layer, with the clean accuracy as reference: bottom-up shows where the
cross-frame interactions that matter have happened; top-down checks that blocking late layers leaks nothing.
Runs on all samples by default so that accuracy is over the whole benchmark. Adds a ``direction`` dimension.
"""

from mapflow.study.context import StudyContext, knockout_sweep, stack_results
from mapflow.knockout.flows import Window

DEFAULT_SAMPLES = "all"
FLOWS = ("cross_frame",)
DIRECTIONS = ("bottom_up", "top_down")


# What `mapflow plot` and the demo suite (`mapflow.cli.demo.organism_suite`) take from this study:
FIGURE = "progressive_figure"  # the mapflow.viz.figures function `mapflow plot` draws
DEMO = (  # its runs in the demo suite; `order` places them in the suite
    {"order": 80, "name": "progressive-video"},
    {"order": 90, "name": "progressive-frames", "variant": "frames"},
)


def run(ctx: StudyContext):
    results = [knockout_sweep(ctx, FLOWS, window=Window(direction)).drop_vars("window") for direction in DIRECTIONS]
    return stack_results(results, "direction", list(DIRECTIONS))

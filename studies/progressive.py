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


def run(ctx: StudyContext):
    results = [knockout_sweep(ctx, FLOWS, window=Window(direction)).drop_vars("window") for direction in DIRECTIONS]
    return stack_results(results, "direction", list(DIRECTIONS))

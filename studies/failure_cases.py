"""Failure cases (paper §F.3, Figs. AJ-AL) on wrongly answered samples.

Runs on the samples the model gets wrong (``--samples`` overrides). ``p_knockout`` follows the *predicted* (wrong)
letter. Flows: cross-frame; non-option question / true option / false options -> last; and the flows the released
code names but never implemented, into the *predicted false option*: video -> predicted option, non-option question
-> predicted option. Those cells are NaN on samples whose prediction is no false option letter. The split of failures
by the sign of their cross-frame effect is `mapflow.viz.figures.failure_split`.
"""

from mapflow.study.context import PREDICTED_OPTION, StudyContext, knockout_sweep
from mapflow.knockout.flows import PAPER_FLOWS

DEFAULT_SAMPLES = "wrong"
SCREENABLE = True  # `--plan screen` estimates its cells (mapflow.knockout.screen)
FLOWS = ("cross_frame", *PAPER_FLOWS["question_and_options_to_last"], f"video->{PREDICTED_OPTION}",
         f"non_option_question->{PREDICTED_OPTION}")


# What `mapflow plot` and the demo suite (`mapflow.cli.demo.organism_suite`) take from this study:
FIGURE = "failure_split_figure"  # the mapflow.viz.figures function `mapflow plot` draws
DEMO = (  # its runs in the demo suite; `order` places them in the suite
    # only wrongly answered samples are knocked out: look at more samples to find some
    {"order": 60, "name": "failure_cases-video", "window": True, "limit_scale": 4},
)


def run(ctx: StudyContext):
    return knockout_sweep(ctx, FLOWS)

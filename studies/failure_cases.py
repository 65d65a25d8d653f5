"""Failure cases (paper §F.3, Figs. AJ-AL) on wrongly answered samples.

Runs on the samples the model gets wrong (``--samples`` overrides). ``p_knockout`` follows the *predicted* (wrong)
letter. Flows: cross-frame; non-option question / true option / false options -> last; and the flows the released
code names but never implemented, into the *predicted false option*: video -> predicted option, non-option question
-> predicted option. Those cells are NaN on samples whose prediction is no false option letter. The split of failures
by the sign of their cross-frame effect is `mapflow.viz.figures.failure_split`.
"""

from mapflow.study.context import PREDICTED_OPTION, StudyContext, knockout_sweep
from mapflow.knockout.flows import PAPER_FLOWS

OPTIONS = {}  # only the options every study takes (mapflow.study.options.COMMON_OPTION_NAMES)

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


# Its sections of `mapflow report` (mapflow.viz.report.study_sections): `order` places them in the page.
def report_section(w, stores):
    """Figs. AJ-AL: wrong answers split by their cross-frame effect, and the flows into the predicted option."""
    from mapflow.viz import figures
    from mapflow.viz.report import flow_reading

    for st in stores:
        s = w.section(f"Failure cases, {st.model}", "Figs. AJ-AL")
        w.figure(s, f"figAJ_failure_split_{st.model}", lambda st=st: figures.failure_split_figure(st.ds),
                 "Wrong answers split by the sign of their cross-frame effect")
        w.figure(s, f"figAK_failure_options_{st.model}", lambda st=st: figures.flow_figure(
            st.ds, flows=[f for f in st.ds["flow"].values if str(f).endswith("->last")]),
            "Question and options -> last on wrong answers (tracking the predicted letter)")
        w.figure(s, f"figAL_failure_predicted_{st.model}", lambda st=st: figures.flow_figure(
            st.ds, flows=[f for f in st.ds["flow"].values if "predicted_option" in str(f)]),
            "Flows into the predicted false option")
        w.reading(s, flow_reading(st.ds))


REPORT = ({"order": 120, "section": report_section},)

"""Failure cases (paper §F.3, Figs. AJ-AL) on wrongly answered samples.

Runs on the samples the model gets wrong (``--samples`` overrides). ``p_knockout`` follows the *predicted* (wrong)
letter. Flows: cross-frame; non-option question / true option / false options -> last; and the flows the released
code names but never implemented, into the *predicted false option*: video -> predicted option, non-option question
-> predicted option. Those cells are NaN on samples whose prediction is no false option letter. The split of failures
by the sign of their cross-frame effect is `mapflow.viz.figures.failure_split`.
"""

import mapflow as mf
from mapflow.analysis.context import StudyContext
from mapflow.knockout.cells import PREDICTED_OPTION
from mapflow.knockout.flows import PAPER_FLOWS
from mapflow.viz import figures

OPTIONS = {}  # only the options every study takes (mapflow.analysis.option_checks.COMMON_OPTION_NAMES)

FLOWS = (
    "cross_frame",
    *PAPER_FLOWS["question_options_to_last"],
    f"video->{PREDICTED_OPTION}",
    f"non_option_question->{PREDICTED_OPTION}",
)


def report_section(w, stores):
    """Figs. AJ-AL: wrong answers split by their cross-frame effect, and the flows into the predicted option."""
    from mapflow.viz import figures
    from mapflow.viz.report import flow_reading

    for st in stores:
        s = w.section(f"Failure cases, {st.model}", "Figs. AJ-AL")
        w.figure(
            s,
            f"figAJ_failure_split_{st.model}",
            lambda st=st: figures.failure_split_figure(st.ds),
            "Wrong answers split by the sign of their cross-frame effect",
        )
        w.figure(
            s,
            f"figAK_failure_options_{st.model}",
            lambda st=st: figures.flow_figure(
                st.ds, flows=[f for f in st.ds["flow"].values if str(f).endswith("->last")]
            ),
            "Question and options -> last on wrong answers (tracking the predicted letter)",
        )
        w.figure(
            s,
            f"figAL_failure_predicted_{st.model}",
            lambda st=st: figures.flow_figure(
                st.ds, flows=[f for f in st.ds["flow"].values if "predicted_option" in str(f)]
            ),
            "Flows into the predicted false option",
        )
        w.reading(s, flow_reading(st.ds))


@mf.study(
    flows=FLOWS,
    figure=figures.failure_split_figure,
    samples="wrong",
    screenable=True,
    options=OPTIONS,
    report=({"order": 120, "section": report_section},),
    demo=(  # its runs in the demo suite; `order` places them in the suite
        # only wrongly answered samples are knocked out: look at more samples to find some
        {"order": 60, "name": "failure_cases-video", "window": True, "limit_scale": 4},
    ),
)
def run(ctx: StudyContext):
    return ctx.sweep(FLOWS)

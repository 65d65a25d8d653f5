"""Flows into the true option (paper §3.3, Fig. 7): video -> non-option question, non-option question -> true
option, video -> true option. Where does the true option's text pick up the video evidence?
"""

from mapflow.studies._flow_sweep import flow_sweep_study

run = flow_sweep_study(
    "into_true_option",
    "into_true_option",
    title="Flows into the true option",
    paper="Fig. 7",
    report_order=70,
    demo_order=50,
)

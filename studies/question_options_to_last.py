"""Question and options -> last position (paper §3.3, Fig. 6): which part of the question block the answer reads.

Three flows: the non-option question, the true option and the false options (all of them) -> the last position.
"""

from mapflow.studies._flow_sweep import flow_sweep_study

run = flow_sweep_study(
    "question_options_to_last",
    "question_options_to_last",
    title="Question and options to the last position",
    paper="Fig. 6",
    report_order=60,
    demo_order=40,
)

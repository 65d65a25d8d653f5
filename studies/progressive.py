"""Progressive cross-frame blocking (paper §F.4, Fig. V): bottom-up (layers 1..l) and top-down (layers l..L).

Reported as accuracy after knockout per layer, with the clean accuracy as reference: bottom-up shows where the
cross-frame interactions that matter have happened; top-down checks that blocking late layers leaks nothing.
Runs on all samples by default so that accuracy is over the whole benchmark. Adds a ``direction`` dimension.
"""

import mapflow as mf
from mapflow.analysis.context import StudyContext
from mapflow.knockout.flows import Window
from mapflow.viz import figures

OPTIONS = {}  # only the options every study takes (mapflow.analysis.option_checks.COMMON_OPTION_NAMES)

FLOWS = ("cross_frame",)
DIRECTIONS = ("bottom_up", "top_down")


def report_section(w, stores):
    """Fig. V: accuracy with cross-frame attention blocked bottom-up and top-down."""
    from mapflow.viz import figures

    for st in stores:
        s = w.section(f"Progressive cross-frame blocking, {st.model}", "Fig. V")
        w.figure(
            s,
            f"figV_progressive_{st.model}",
            lambda st=st: figures.progressive_figure(st.ds),
            "Accuracy with cross-frame attention blocked in layers 1..l (bottom_up) and l..L (top_down)",
        )
        accuracy = figures.progressive_accuracy(st.ds)
        w.reading(
            s,
            f"Bottom-up blocking up to layer 1 leaves {float(accuracy.sel(direction='bottom_up')[0]):.0f} % "
            f"accuracy and up to the last layer {float(accuracy.sel(direction='bottom_up')[-1]):.0f} %; "
            f"top-down blocking from the last layer leaves "
            f"{float(accuracy.sel(direction='top_down')[-1]):.0f} %.",
        )


@mf.study(
    flows=FLOWS,
    figure=figures.progressive_figure,
    samples="all",
    options=OPTIONS,
    report=({"order": 20, "section": report_section},),
    demo=(  # its runs in the demo suite; `order` places them in the suite
        {"order": 80, "name": "progressive-video"},
        {"order": 90, "name": "progressive-frames", "variant": "frames"},
    ),
)
def run(ctx: StudyContext):
    results = [ctx.sweep(FLOWS, window=Window(direction)).drop_vars("window") for direction in DIRECTIONS]
    return ctx.stack(results, "direction", list(DIRECTIONS))

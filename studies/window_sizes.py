"""Window-size sweep (paper §F.6, Fig. W): the same knockouts with centred windows of several sizes.

Options: ``sizes`` (comma-separated, default ``1,5,9,13``; on a model with few layers use smaller ones, e.g.
``1,3,5``). Flows: cross-frame (``--flows`` overrides). Adds a ``window_size`` dimension.
"""

import mapflow as mf
from mapflow.analysis.context import StudyContext
from mapflow.analysis.options import StudyOption, whole_numbers
from mapflow.knockout.flows import Window
from mapflow.viz import figures

FLOWS = ("cross_frame",)
OPTIONS = {
    "sizes": StudyOption(
        "centred window sizes swept, comma-separated (on a model with few layers use smaller ones)",
        "1,5,9,13",
        parse=whole_numbers(1),
        expects="k1,k2,... (each >= 1)",
    ),
}


def sizes(ctx: StudyContext) -> list[int]:
    return [int(k) for k in ctx.config.option("sizes", OPTIONS["sizes"].default).split(",")]


def report_section(w, stores):
    """Fig. W: cross-frame knockout with windows of several sizes."""
    from mapflow.viz import figures

    for st in stores:
        s = w.section(f"Window sizes, {st.model}", "Fig. W")
        w.figure(
            s,
            f"figW_window_sizes_{st.model}",
            lambda st=st: figures.window_size_figure(st.ds),
            "Cross-frame knockout with centred windows of several sizes",
        )


@mf.study(
    flows=FLOWS,
    figure=figures.window_size_figure,
    screenable=True,
    options=OPTIONS,
    report=({"order": 40, "section": report_section},),
    demo=(  # its runs in the demo suite; `order` places them in the suite
        {"order": 70, "name": "window_sizes-video", "options": {"sizes": "1,3,5,7"}},
    ),
)
def run(ctx: StudyContext):
    results = [ctx.sweep(FLOWS, window=Window("center", k)).drop_vars("window") for k in sizes(ctx)]
    return ctx.stack(results, "window_size", sizes(ctx))

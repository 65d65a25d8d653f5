"""Cross-frame knockout (paper §3.2, Fig. 2): each frame's video tokens may not read earlier frames.

Blocks, in a window of layers around each layer, every edge from an earlier frame's keys to a later frame's queries;
within-frame attention stays. A drop in the answer probability says the model builds its answer from interactions
between frames in those layers.
"""

import mapflow as mf
from mapflow.analysis.context import StudyContext
from mapflow.viz import figures

OPTIONS = {}  # only the options every study takes (mapflow.analysis.option_checks.COMMON_OPTION_NAMES)

FLOWS = ("cross_frame",)


def report_section(w, stores):
    """Fig. 2: every model's cross-frame knockout in one figure."""
    from mapflow.viz import figures
    from mapflow.viz.report import measured_samples, strongest_drop

    stores = sorted(stores, key=lambda st: "frames" in st.model)  # video models first: the paper's green
    s = w.section("Cross-frame interactions", "Fig. 2")
    w.figure(
        s,
        "fig2_cross_frame",
        lambda: figures.model_overlay_figure({st.model: st.ds for st in stores}),
        "Blocking attention from later frames to earlier frames in a window of layers, per model",
    )
    drops = [(st, *strongest_drop(st.ds, "cross_frame")) for st in stores]
    w.reading(
        s,
        " ".join(
            f"{st.model}: strongest drop {value:.1f} % at layer {layer} ({measured_samples(st.ds)} samples)."
            for st, layer, value in drops
        ),
    )


def open_ended_report_section(w, stores):
    """Fig. P: the same on sentence completion (appendix C.1)."""
    from mapflow.viz import figures
    from mapflow.viz.report import open_ended_section

    for st in stores:
        open_ended_section(w, st, "cross_frame", "Fig. P", figures.flow_figure)


@mf.study(
    flows=FLOWS,
    figure=figures.flow_figure,
    screenable=True,
    options=OPTIONS,
    report=(
        {"order": 10, "section": report_section},
        {"order": 130, "section": open_ended_report_section, "stores": "open_ended"},
    ),
    demo=(  # its runs in the demo suite; `order` places them in the suite
        {"order": 10, "name": "cross_frame-video", "window": True},
        {"order": 20, "name": "cross_frame-frames", "variant": "frames", "window": True},
        # the planted organism's own cross-frame sweep: Table E derives its pathway from it
        {"order": 25, "name": "cross_frame-pathway", "variant": "pathway", "window": True},
        {"order": 160, "name": "open_ended_cross_frame-video", "window": True, "open_ended": True, "limit_scale": 0.5},
    ),
)
def run(ctx: StudyContext):
    return ctx.sweep(FLOWS)

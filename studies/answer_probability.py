"""Layer-wise answer probability at the last position (paper §3.4, Fig. 8; open-ended Fig. R).

For every layer, the probability of each option letter when that layer's output is read through the unembedding.
Default: final norm + LM head at every layer, so the last layer equals the model's output. ``--option
lens=released_code`` reproduces the authors' script (no final norm before the last layer). Option slots are the
letters A-E (NaN where a sample has fewer options); ``is_true_option`` marks the answer. For a sentence-completion
template (no letters) the single slot ``answer`` holds the answer's first token.
"""

import numpy as np
import xarray as xr

import mapflow as mf
from mapflow.analysis.context import StudyContext
from mapflow.analysis.options import StudyOption
from mapflow.differences import default
from mapflow.readouts.lens import LENS_CONVENTIONS, clean_and_layer_probabilities
from mapflow.viz import figures

OPTIONS = {
    "lens": StudyOption(
        "how a layer's output is read: final norm + LM head (paper) or the released script's "
        "projection (no final norm before the last layer)",
        default("lens"),
        LENS_CONVENTIONS,
    ),
}
SLOTS = ("A", "B", "C", "D", "E")


def report_section(w, stores):
    """Fig. 8: the true and false options' probability read at each layer."""
    from mapflow.viz import figures
    from mapflow.viz.report import planted_reading

    for st in stores:
        s = w.section(f"Layer-wise answer probability, {st.model}", "Fig. 8")
        w.figure(
            s,
            f"fig8_answer_probability_{st.model}",
            lambda st=st: figures.answer_probability_figure(st.ds),
            "Probability of the true and false options read at each layer (final norm + LM head)",
        )
        planted_reading(w, s, st)
        correct = st.ds.isel(sample=st.ds["correct"].values.astype(bool))
        if correct.sizes["sample"]:
            true_p = correct["p_option"].where(correct["is_true_option"]).max("option").mean("sample").values
            crossing = int(np.argmax(true_p > 50)) + 1 if (true_p > 50).any() else None
            w.reading(
                s,
                f"The true option's probability passes 50 % at layer {crossing} of {len(true_p)}."
                if crossing
                else "The true option never passes 50 %.",
            )


def open_ended_report_section(w, stores):
    """Fig. R: the same on sentence completion (appendix C.1), over all samples."""
    from mapflow.viz import figures
    from mapflow.viz.report import open_ended_section

    for st in stores:
        open_ended_section(
            w, st, "answer_probability", "Fig. R", lambda ds: figures.answer_probability_figure(ds, correct_only=False)
        )


@mf.study(
    figure=figures.answer_probability_figure,
    options=OPTIONS,
    report=(
        {"order": 100, "section": report_section},
        {"order": 150, "section": open_ended_report_section, "stores": "open_ended"},
    ),
    demo=(  # its runs in the demo suite; `order` places them in the suite
        {"order": 120, "name": "answer_probability-pathway", "variant": "pathway"},
        {"order": 180, "name": "open_ended_answer_probability-video", "open_ended": True, "limit_scale": 0.5},
    ),
)
def run(ctx: StudyContext):
    convention = ctx.config.option("lens", default("lens"))
    if ctx.prompt.option_letters:
        tokens = ctx.option_tokens()
        slots, ids = list(SLOTS), [tokens.get(s) for s in SLOTS]
        is_true = [s == ctx.prompt.true_letter for s in SLOTS]
    else:
        slots, ids, is_true = ["answer"], [ctx.answer_token_id()], [True]
    present = [i for i, token in enumerate(ids) if token is not None]
    # the clean run and the lens in one request on a server
    out = ctx.measure(clean_and_layer_probabilities, [ids[i] for i in present], ctx.answer_token_id(), convention)
    clean, probs = ctx.clean_from(out["clean"]), out["probs"]
    p_option = np.full((ctx.adapter.num_layers, len(slots)), np.nan)
    p_option[:, present] = probs[:, :-1].numpy()
    return xr.Dataset(
        {
            "p_option": (("layer", "option"), p_option * 100),
            "p_pred": (("layer",), probs[:, -1].numpy() * 100),
            "is_true_option": (("option",), np.asarray(is_true)),
            **clean.correctness(),
            "pred_base": ((), np.int64(clean.pred)),
            "p_base": ((), clean.p_base),
        },
        coords={"layer": np.arange(ctx.adapter.num_layers), "option": slots},
        attrs={"lens": convention, "units": "percent"},
    )

"""Multi-token open-ended answers: verb anchors in the model's own response (paper appendix C.2, Fig. S).

Per sample: generate a response greedily, find its verbs, and for the 1st, 2nd and 3rd verb "anchor" cut the input
just before it; the last position is then the token that predicts the anchor. Knockout flows: video -> question,
video -> earlier response, video -> last, question -> last, earlier response -> last; the metric is the relative
change of the anchor token's probability. Samples with fewer than ``min_anchors`` anchors, or whose truncated input
does not reproduce the anchor, keep NaN.

Options: ``verbs=auto|spacy|list`` (spaCy when installed, see docs/paper/figS-verb-anchors.md; else data/keywords/verbs.txt),
``spacy_model`` (default en_core_web_lg), ``max_new_tokens`` (default 256, the released code's reference response),
``min_anchors`` (default 3), ``num_open`` (response tokens before the last left open, default 1). Use with a free-form template, e.g.
``--benchmark vcgbench`` or ``--template vcgbench_free_form``.
"""

from dataclasses import replace

import numpy as np
import xarray as xr

import mapflow as mf
from mapflow.analysis.context import StudyContext
from mapflow.analysis.options import StudyOption, whole_number
from mapflow.differences import default
from mapflow.readouts.generation import extend_input, greedy_generate
from mapflow.readouts.keywords import verb_detector
from mapflow.viz import figures

ANCHORS = (1, 2, 3)
DEFAULT_MAX_NEW_TOKENS = default("max_new_tokens")  # the released reference response (spec A4 step 1)
FLOWS = ("video->question", "video->response", "video->last", "question->last", "response->last")
OPTIONS = {
    "verbs": StudyOption(
        "how verbs are found: spaCy, the shipped list, or spaCy when installed",
        default("verbs"),
        ("auto", "spacy", "list"),
    ),
    "spacy_model": StudyOption("the spaCy pipeline (the paper's)", "en_core_web_lg", expects="a spaCy pipeline name"),
    "max_new_tokens": StudyOption(
        "length of the generated response", DEFAULT_MAX_NEW_TOKENS, parse=whole_number(1), expects="N >= 1"
    ),
    "min_anchors": StudyOption(
        "samples with fewer verb anchors keep NaN", "3", parse=whole_number(0), expects="N >= 0"
    ),
    "num_open": StudyOption("response tokens before the last left open", "1", parse=whole_number(0), expects="N >= 0"),
}


def find_anchors(pieces: list[str], verbs: set[str]) -> list[int]:
    """Indices of generated tokens that start a verb of one or two tokens (the paper's rule)."""
    anchors, i = [], 0
    while i < len(pieces):
        if pieces[i].strip() in verbs:
            anchors.append(i)
        elif i + 1 < len(pieces) and (pieces[i] + pieces[i + 1]).strip() in verbs:
            anchors.append(i)
            i += 1
        i += 1
    return anchors


def response_span(prompt_len: int, anchor: int, previous_anchor: int | None, num_open: int) -> list[int]:
    """Response positions before the last one, minus the ``num_open`` just before it (never cutting into the
    previous anchor), and at least one token: the released code's ``end = max(1, …)``, so an anchor that is the third
    generated token still has a one-token response span."""
    length = anchor - 1  # response tokens before the new last token
    end = max(1, length - num_open, 0 if previous_anchor is None else previous_anchor + 1)
    return [prompt_len + i for i in range(min(end, length))]


def report_section(w, stores):
    """Fig. S: the n-th verb's probability under each flow's knockout (appendix C.2)."""
    from mapflow.viz import figures

    for st in stores:
        s = w.section(f"Verb anchors in generated answers, {st.model}", "Fig. S")
        w.figure(
            s,
            f"figS_verb_anchors_{st.model}",
            lambda st=st: figures.verb_anchor_figure(st.ds),
            "Relative change of the n-th verb's probability per flow (appendix C.2)",
        )
        found = st.ds["num_anchors"].values
        w.reading(
            s,
            f"{int((found >= 3).sum())} of {len(found)} responses had at least 3 verb anchors "
            f"(detector: {st.ds.attrs.get('verb_detector', '?')}).",
        )


@mf.study(
    flows=FLOWS,
    figure=figures.verb_anchor_figure,
    samples="correct",  # the truncated input must reproduce the anchor, as the paper requires
    options=OPTIONS,
    report=({"order": 160, "section": report_section, "stores": "all"},),
    demo=(  # its runs in the demo suite; `order` places them in the suite
        {
            "order": 190,
            "name": "verb_anchors-video",
            "window": True,
            "open_ended": True,
            "options": {"verbs": "auto", "max_new_tokens": "16"},
            "limit_scale": 0.2,
        },
    ),
)
def run(ctx: StudyContext):
    option = ctx.config.option
    detect, detector_name = verb_detector(
        option("verbs", default("verbs")), option("spacy_model", OPTIONS["spacy_model"].default)
    )
    max_new_tokens = int(option("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
    generated = greedy_generate(ctx.adapter, ctx.prepared, max_new_tokens=max_new_tokens)
    tokenizer = ctx.adapter.tokenizer
    pieces = [tokenizer.decode([t]) for t in generated]
    verbs = {v.lower() for v in detect(tokenizer.decode(generated))}
    anchors = find_anchors([p.lower() for p in pieces], verbs)
    prompt_len = ctx.layout.seq_len
    results = []
    for order in ANCHORS:
        index = order - 1
        usable = (
            len(anchors) >= int(option("min_anchors", OPTIONS["min_anchors"].default))
            and index < len(anchors)
            and anchors[index] > 0
        )
        if usable:
            anchor = anchors[index]
            span = response_span(
                prompt_len,
                anchor,
                anchors[index - 1] if index else None,
                int(option("num_open", OPTIONS["num_open"].default)),
            )
            usable = bool(span)
        if not usable:
            results.append(ctx.empty_sweep(FLOWS))
            continue
        extended = extend_input(ctx.prepared, generated[:anchor], response=span)
        sub = replace(ctx, prepared=extended, answer_token=int(generated[anchor]))
        results.append(sub.sweep(FLOWS))
    ds = xr.concat(results, dim="anchor", data_vars="all", coords="different", compat="equals").assign_coords(
        anchor=list(ANCHORS)
    )  # every variable per anchor: each anchor has its own clean run
    ds["response_text"] = ((), np.asarray(tokenizer.decode(generated), dtype=object))
    ds["num_anchors"] = ((), np.int64(len(anchors)))
    ds.attrs["verb_detector"] = detector_name
    return ds

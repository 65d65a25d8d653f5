"""Logit lens on video tokens (paper §3.3, Fig. 4, Fig. T): the top-1 token of every video position at every layer.

Each (layer, video position) gets its top-1 token when the layer's output goes through the final norm and the LM head
(the paper's text; ``--option lens=released_code`` uses the released script's input-embedding projection of the
residual entering each layer). Positions whose top-1 token is a keyword's first sub-token are marked with the keyword
and its kind (spatial / temporal); ``--option keywords=paper|released_code|organism|DIR`` picks the lists (default
``paper``, Table D). Small RGB thumbnails of the input frames are kept for the per-frame overlays (Fig. T).
Frequencies per layer bin: `mapflow.viz.tables.keyword_frequency`. A clean pass is run too, so the store holds
``correct`` (both rules), ``pred_base`` and ``included`` (whether the run's ``--samples`` mode keeps the sample): the
paper counts correctly answered samples only, and the table applies that filter from the store.
"""

import numpy as np
import xarray as xr

import mapflow as mf
from mapflow.analysis.context import StudyContext
from mapflow.analysis.options import StudyOption
from mapflow.differences import default
from mapflow.readouts.keywords import load_keywords, piece_table
from mapflow.readouts.lens import LENS_CONVENTIONS, clean_and_layer_top_tokens
from mapflow.viz import figures
from mapflow.viz.thumbnails import frame_thumbnails, video_token_coords

OPTIONS = {
    "lens": StudyOption(
        "how a layer's output is read: final norm + LM head (paper) or the released script's "
        "input-embedding projection of the residual",
        default("lens"),
        LENS_CONVENTIONS,
    ),
    "keywords": StudyOption(
        "the spatial / temporal keyword lists",
        default("keywords"),
        parse=load_keywords,
        expects="paper | released_code | organism | a directory with spatial.txt and temporal.txt",
    ),
}


def report_section(w, stores):
    """Fig. 4 and Fig. T: keyword frequency per layer bin and keyword hits on the frames."""
    from mapflow.viz import figures, tables
    from mapflow.viz.report import layer_interval, planted_reading

    for st in stores:
        s = w.section(f"Logit lens on video tokens, {st.model}", "Fig. 4, Fig. T")
        interval = layer_interval(st.ds)
        min_hits = 100 if interval == 5 else 10
        w.figure(
            s,
            f"fig4_keywords_{st.model}",
            lambda st=st, interval=interval, min_hits=min_hits: figures.keyword_frequency_figure(
                st.ds, interval=interval, min_hits=min_hits
            ),
            "Normalized keyword frequency per layer bin (ALL_NORM)",
        )
        for kind in ("spatial", "temporal"):
            table = tables.keyword_frequency(st.ds, kind, interval=interval, min_hits=min_hits)
            if not table.empty:
                w.table(s, f"fig4_{kind}_{st.model}", table, f"{kind} keyword hits, normalized per keyword")
        w.figure(
            s,
            f"figT_overlay_{st.model}",
            lambda st=st, interval=interval: figures.logit_lens_overlay_figure(st.ds, 0, interval=interval),
            "Keyword hits at their video token on the frames (first sample)",
        )
        planted_reading(w, s, st)
        hits = (st.ds["keyword"].values != "").mean()
        w.reading(
            s,
            f"{100 * hits:.1f} % of (layer, video token) cells have a keyword as top-1 token "
            f"(keyword lists: {st.ds.attrs.get('keywords', '?')}).",
        )


@mf.study(
    figure=figures.keyword_frequency_figure,
    options=OPTIONS,
    report=({"order": 80, "section": report_section},),
    demo=(  # its runs in the demo suite; `order` places them in the suite
        {
            "order": 130,
            "name": "logit_lens-pathway",
            "variant": "pathway",
            "options": {"keywords": "organism"},
            "limit_scale": 0.5,
        },
    ),
)
def run(ctx: StudyContext):
    lists = load_keywords(ctx.config.option("keywords", default("keywords")))
    table = piece_table(ctx.adapter.tokenizer, lists)
    video = ctx.layout.positions("video")
    # the lens and the clean run in one request on a server
    out = ctx.measure(
        clean_and_layer_top_tokens, video, ctx.answer_token_id(), ctx.config.option("lens", default("lens"))
    )
    tops = out["tops"].numpy()
    vocabulary = {int(t): ctx.adapter.tokenizer.decode([int(t)]) for t in np.unique(tops)}
    text = np.vectorize(vocabulary.get, otypes=[object])(tops)
    hits = [table.get(str(piece).strip().lower(), ("", "")) for piece in text.ravel()]
    kind = np.asarray([h[0] for h in hits], dtype=object).reshape(tops.shape)
    keyword = np.asarray([h[1] for h in hits], dtype=object).reshape(tops.shape)
    cell = ("layer", "video_token")
    ds = xr.Dataset(
        {
            "top_token": (cell, tops.astype(np.int64)),
            "top_text": (cell, text),
            "keyword": (cell, keyword),
            "keyword_kind": (cell, kind),
        },
        coords={"layer": np.arange(ctx.adapter.num_layers), **video_token_coords(ctx.layout)},
        attrs={"keywords": lists.name, "lens": ctx.config.option("lens", default("lens"))},
    )
    clean = ctx.clean_from(out["clean"])
    ds = ds.assign(
        {
            **clean.correctness(),
            "pred_base": ((), np.int64(clean.pred)),
            "answer_token": ((), np.int64(clean.gt_token)),
            "included": ((), ctx.wants_knockout(clean)),
        }
    )
    return ds.merge(frame_thumbnails(ctx))

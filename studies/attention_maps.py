"""Attention maps (paper §3.3, Fig. 5 / Fig. U): how question words attend to the video, with and without
cross-frame interactions.

For chosen query words of the question block, the head-averaged attention probabilities to every video token per
layer, in the clean run and with cross-frame attention knocked out (all layers by default), recomputed for those rows
only (no full attention tensors). Queries are indexed by absolute position (the released script's labels are off by
the ``Question:`` prefix).

Options: ``queries=word1,word2`` (tokens whose text matches, default: every word token of the question block, up to
``max_queries``, default 16); ``knockout_layers=A-B`` (0-based half-open, default all); ``head_pool=mean|max``.
Query slots beyond a sample's queries hold NaN.
"""

import numpy as np
import torch
import xarray as xr

import mapflow as mf
from mapflow.analysis.context import StudyContext
from mapflow.analysis.options import StudyOption, layer_ranges, whole_number
from mapflow.knockout.flows import Flow, Window
from mapflow.readouts.attention import HEAD_POOLS, attention_rows
from mapflow.viz import figures
from mapflow.viz.thumbnails import frame_thumbnails, video_token_coords

CONDITIONS = ("clean", "cross_frame_knockout")
OPTIONS = {
    "queries": StudyOption(
        "question words whose attention rows are kept, comma-separated (not set: every word token "
        "of the question block)",
        expects="word1,word2",
    ),
    "max_queries": StudyOption(
        "at most this many query rows per sample", "16", parse=whole_number(1), expects="a whole number >= 1"
    ),
    "knockout_layers": StudyOption(
        "layers of the cross-frame knockout (not set: all)", parse=layer_ranges, expects="A-B (0-based, half-open)"
    ),
    "head_pool": StudyOption("how the heads' attention is pooled", "mean", HEAD_POOLS),
}


def query_positions(ctx: StudyContext) -> tuple[list[int], list[str]]:
    wanted = {
        w.strip().lower()
        for w in ctx.config.option("queries", OPTIONS["queries"].default) or "".split(",")
        if w.strip()
    }
    positions, texts = [], []
    ids = ctx.prepared.inputs["input_ids"][0]
    for position in ctx.layout.positions("question"):
        text = ctx.adapter.tokenizer.decode([int(ids[position])])
        word = text.strip().lower()
        if (word in wanted) if wanted else any(c.isalpha() for c in word):
            positions.append(int(position))
            texts.append(text)
    return positions, texts


def report_section(w, stores):
    """Fig. 5 / Fig. U: attention from question words to the video, clean and under cross-frame knockout."""
    from mapflow.viz import figures
    from mapflow.viz.report import planted_reading

    for st in stores:
        s = w.section(f"Attention from question words to the video, {st.model}", "Fig. 5 / Fig. U")
        w.figure(
            s,
            f"fig5_attention_{st.model}",
            lambda st=st: figures.attention_map_figure(st.ds, 0, 0),
            "log10(attention + 5e-5), head mean, clean vs cross-frame knockout (first sample, first query)",
        )
        attention = st.ds["attention"]
        change = float(
            np.nanmean(
                np.abs(attention.sel(condition="cross_frame_knockout").values - attention.sel(condition="clean").values)
            )
        )
        w.reading(
            s,
            f"Cross-frame knockout changes the question->video attention by {change:.4f} on average "
            "(absolute, per cell).",
        )
        planted_reading(w, s, st)


@mf.study(
    figure=figures.attention_map_figure,
    options=OPTIONS,
    report=({"order": 90, "section": report_section},),
    demo=(  # its runs in the demo suite; `order` places them in the suite
        {
            "order": 140,
            "name": "attention_maps-pathway",
            "variant": "pathway",
            "options": {"max_queries": "6"},
            "limit_scale": 0.2,
        },
    ),
)
def run(ctx: StudyContext):
    max_queries = int(ctx.config.option("max_queries", OPTIONS["max_queries"].default))
    positions, texts = query_positions(ctx)
    positions, texts = positions[:max_queries], texts[:max_queries]
    num_layers = ctx.adapter.num_layers
    ranges = ctx.config.option("knockout_layers")
    knockout_layers = Window.parse_ranges(ranges).layers(0, num_layers) if ranges else tuple(range(num_layers))
    video = ctx.layout.positions("video")
    blocked = torch.from_numpy(Flow.parse("cross_frame").block_matrix(ctx.layout))
    head_pool = ctx.config.option("head_pool", OPTIONS["head_pool"].default)
    attention = np.full((len(CONDITIONS), num_layers, max_queries, len(video)), np.nan, dtype=np.float32)
    if positions:
        attention[0, :, : len(positions)] = attention_rows(
            ctx.adapter, ctx.prepared, positions, video, head_pool=head_pool
        ).numpy()
        attention[1, :, : len(positions)] = attention_rows(
            ctx.adapter,
            ctx.prepared,
            positions,
            video,
            blocked=blocked,
            knockout_layers=knockout_layers,
            head_pool=head_pool,
        ).numpy()
    pad = max_queries - len(positions)
    ds = xr.Dataset(
        {
            "attention": (("condition", "layer", "query", "video_token"), attention),
            "query_text": (("query",), np.asarray(texts + [""] * pad, dtype=object)),
            "query_position": (("query",), np.asarray(positions + [-1] * pad, dtype=np.int64)),
        },
        coords={
            "condition": list(CONDITIONS),
            "layer": np.arange(num_layers),
            "query": np.arange(max_queries),
            **video_token_coords(ctx.layout),
        },
        attrs={"head_pool": head_pool, "knockout_layers": ",".join(map(str, knockout_layers))},
    )
    return ds.merge(frame_thumbnails(ctx))

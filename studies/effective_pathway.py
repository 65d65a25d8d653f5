"""Effective pathways (paper §3.5, Table 3 / Table A): accuracy when only the identified routes stay open.

Per sample, five forwards (one request on a server): clean; ``effective`` (the released code's masks, spec A6);
``effective_strict`` (also closes the bridge and post-prompt routes the released code leaves open); and the seeded
random-blocking controls ``random`` and ``random_strict`` at the same edge budgets. Stores the prediction, correctness, answer probability and
kept attention edges (over all layers, once per layer) of each, the open layers per route and where they came from
(``layer_source``).

Layers per route come from (first match): ``--option ranges="cross_frame=5-15;video_question=5-20;question_last=15-25"``
(0-based, half-open); ``--option from=STORE1,STORE2`` (exact knockout stores holding the cross_frame, video->question
and question->last flows; screen stores are refused; the paper's rule: 1-based intervals of ``interval`` layers,
default 5, whose mean change is below ``threshold`` %, default -5, on the Action Antonym samples as the paper derives
Table E when the stores hold that task, else on ``task`` if given; ``task=all`` pools every task); ``--option
preset=NAME`` (a Table E model's ranges, on a model of its depth: llava-7b, llava-13b, internvl, videollama3,
videollama3_released); else the loaded model's own Table E preset, chosen by (family, decoder layers, hidden size)
(`mapflow.readouts.pathways.model_key`). A model Table E does not list is refused before any sample runs, naming the
two ways out (ranges, or from=). ``videollama3_released`` cuts the video rules on the whole video block (the
``Time t s:`` labels and commas included) as the released VideoLLaMA3 script; ``--option video_span=video_block``
does the same with any layer source (default ``video``, the feature tokens; the preset's span otherwise). Runs on all
samples by default.
``--option random_block_ratio=R`` gives both random controls the released scripts' budget instead, ``int(R × N(N+1)/2)``
pairs in every layer (they use 0.58 for LLaVA-NeXT-7B: 1 minus the kept share of its effective run, so the same
share of edges, not the same count, on a model whose prompt is shaped differently).
"""

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import xarray as xr

import mapflow as mf
from mapflow.analysis.context import StudyContext
from mapflow.analysis.options import StudyOption, existing_paths, number, share, whole_number
from mapflow.differences import default
from mapflow.errors import MapflowError
from mapflow.knockout.cells import layer_mask_readouts, pack_layer_masks
from mapflow.readouts.pathways import (
    PRESETS,
    ROUTES,
    VIDEO_SPANS,
    PathwayLayers,
    causal_edges,
    check_layers,
    derive_layers,
    kept_edges,
    model_key,
    named_preset,
    parse_layers,
    pathway_masks,
    preset_for_model,
    random_masks,
)
from mapflow.viz import tables

TABLE_E_TASK = "action_antonym"  # the paper derives the pathway layers from Action Antonym's knockouts (Table E)
CONDITIONS = ("clean", "effective", "effective_strict", "random", "random_strict")
OPTIONS = {  # how the layers are chosen is in the module doc; their fit to the model is checked by check_options
    "ranges": StudyOption(
        "the open layers of each route (first choice)",
        parse=parse_layers,
        expects="cross_frame=A-B;video_question=A-B;question_last=A-B (0-based, half-open)",
    ),
    "from": StudyOption(
        "derive the layers from these exact knockout stores (Table E's rule)",
        parse=existing_paths,
        expects="STORE1,STORE2",
    ),
    "task": StudyOption(
        "the task whose knockouts from= reads (all: every task pooled; not set: Action Antonym when "
        "the stores hold it)",
        expects="a task name or all",
    ),
    "interval": StudyOption("from=: layers per 1-based interval", "5", parse=whole_number(1), expects="N >= 1"),
    "threshold": StudyOption(
        "from=: an interval's mean change (%) must be below this", "-5", parse=number, expects="a number (percent)"
    ),
    "preset": StudyOption("a Table E model's ranges, on a model of its depth", default("preset"), tuple(PRESETS)),
    "video_span": StudyOption(
        "the video rules cut the feature tokens or the whole video block", default("video_span"), VIDEO_SPANS
    ),
    "random_block_ratio": StudyOption(
        "both random controls block this share of every layer's causal pairs (the released scripts' budget)",
        default("random_block_ratio"),
        parse=share,
        expects="a share in (0, 1)",
    ),
}


@lru_cache(maxsize=8)
def _derived(stores: str, task: str | None, interval: int, threshold: float) -> PathwayLayers:
    from mapflow.results.method import require_exact
    from mapflow.results.store import open_dataset
    from mapflow.results.tasks import select_task, task_names

    parts = []
    for path in stores.split(","):
        ds = open_dataset(path.strip())
        require_exact(ds, "--option from= (Table E's layer rule)", path.strip())
        parts.append(ds["rel_change"])
    rel_change = xr.concat(parts, dim="flow", join="inner")
    tasks = task_names(rel_change)
    if task is None:
        task = TABLE_E_TASK if TABLE_E_TASK in tasks else "all"
    if task != "all":
        if task not in tasks:
            raise MapflowError(
                f"--option task={task}: the stores {stores} hold no such task (tasks: {', '.join(tasks)})"
            )
        rel_change = select_task(rel_change, task)
    return derive_layers(rel_change, interval=interval, threshold=threshold)


@dataclass(frozen=True)
class LayerChoice:
    """The open layers per route, the span the video rules cut, and where the layers came from (stored)."""

    layers: PathwayLayers
    video_span: str
    source: str


def choose_layers(option, adapter) -> LayerChoice:
    """The layers of a run, from its options and the loaded model (see the module doc for the order)."""
    num_layers = adapter.num_layers
    if option("ranges"):
        choice = LayerChoice(parse_layers(option("ranges")), "video", f"ranges {option('ranges')}")
    elif option("from"):
        choice = LayerChoice(
            _derived(
                option("from"),
                option("task"),
                int(option("interval", OPTIONS["interval"].default)),
                float(option("threshold", OPTIONS["threshold"].default)),
            ),
            "video",
            f"derived from {option('from')}",
        )
    else:
        if option("preset"):
            preset, how = named_preset(option("preset"), num_layers), "--option preset"
        else:
            key = model_key(adapter)
            preset, how = preset_for_model(key), f"matched by {key[0]}, {key[1]} layers, hidden {key[2]}"
        choice = LayerChoice(
            preset.layers(), preset.video_span, f"preset {preset.name} ({preset.model}, {preset.source}; {how})"
        )
    if option("video_span"):  # e.g. the released VideoLLaMA3 video range with ranges= or from=
        if option("video_span") not in VIDEO_SPANS:
            raise MapflowError(f"--option video_span={option('video_span')}: choose one of {', '.join(VIDEO_SPANS)}")
        choice = LayerChoice(choice.layers, option("video_span"), choice.source)
    check_layers(choice.layers, num_layers)
    return choice


def check_options(adapter, config, **_) -> None:
    """Before the store exists (`mapflow.analysis.run_checks.check_run_options`): the layers can be chosen for this
    model."""
    choose_layers(config.option, adapter)


def report_section(w, stores):
    """Table 3 / Table A / Table E(a): accuracy with only the effective pathway open, against random blocking."""
    from mapflow.viz import tables
    from mapflow.viz.report import planted_reading

    for st in stores:
        s = w.section(f"Effective pathways, {st.model}", "Table 3 / Table A / Table E(a)")
        table = tables.pathway_table(st.ds)
        planted_reading(w, s, st)
        w.table(s, f"table3_pathways_{st.model}", table, "Accuracy (%) and kept attention edges (%) per condition")
        routes = {str(r): str(v) for r, v in zip(st.ds["route"].values, st.ds["open_layers"].values[0])}
        row = table.loc["all"]
        w.reading(
            s,
            f"Open layers (0-based): {routes}. Keeping {row['effective_kept_%']:.0f} % of the edges, the "
            f"effective pathway gives {row['effective_acc']:.1f} % accuracy vs {row['clean_acc']:.1f} % "
            f"clean and {row['random_acc']:.1f} % for random blocking at the same budget; the strict "
            f"variant gives {row['effective_strict_acc']:.1f} %.",
        )
        if row["effective_acc"] < row["clean_acc"] - 10:
            w.reading(
                s,
                "The paper's pathway template (video -> question -> last, video -> last always cut) loses "
                "much of the accuracy here: this model routes information differently (see the knockout "
                "figures above, e.g. video -> last).",
            )


@mf.study(
    table=tables.pathway_table,
    samples="all",
    options=OPTIONS,
    check=check_options,
    report=({"order": 110, "section": report_section},),
    demo=(  # its runs in the demo suite; `order` places them in the suite
        # on the planted organism, with the rule `mapflow organism verify` applies (1-layer bins, every task pooled)
        {
            "order": 150,
            "name": "effective_pathway-pathway",
            "variant": "pathway",
            "options": {"interval": "1", "task": "all"},
            "depends_on": ("cross_frame-pathway", "information_flow-pathway"),
        },
    ),
)
def run(ctx: StudyContext):
    choice = choose_layers(ctx.config.option, ctx.adapter)
    layers, video_span = choice.layers, choice.video_span
    num_layers = ctx.adapter.num_layers
    effective = pathway_masks(ctx.layout, layers, num_layers, video_span=video_span)
    strict = pathway_masks(ctx.layout, layers, num_layers, strict=True, video_span=video_span)
    total = causal_edges(ctx.layout.seq_len) * num_layers
    budget = {"random": total - kept_edges(effective), "random_strict": total - kept_edges(strict)}
    ratio = ctx.config.option("random_block_ratio")
    if ratio is not None:  # the released scripts' budget: a share of every layer's causal pairs
        if not 0.0 < float(ratio) < 1.0:
            raise MapflowError(f"--option random_block_ratio={ratio}: give a share of the causal pairs in (0, 1)")
        budget = dict.fromkeys(budget, int(float(ratio) * causal_edges(ctx.layout.seq_len)) * num_layers)
    masks = {
        "effective": effective,
        "effective_strict": strict,
        **{
            name: random_masks(ctx.layout, edges, num_layers, ctx.rng(name), video_span=video_span)
            for name, edges in budget.items()
        },
    }
    # the clean run and the four conditions: one request per sample on a server (the masks travel as bits)
    readouts = ctx.measure(
        layer_mask_readouts, tuple(pack_layer_masks(masks[name]) for name in CONDITIONS[1:]), ctx.answer_token_id()
    )
    clean = ctx.clean_from(readouts["clean"])
    preds = [clean.pred, *readouts["pred"].tolist()]
    p_answer = [clean.p_gt_base, *readouts["p_gt"].tolist()]
    kept = [total, *(kept_edges(masks[name]) for name in CONDITIONS[1:])]
    preds = np.asarray(preds, dtype=np.int64)
    return xr.Dataset(
        {
            "pred": (("condition",), preds),
            "correct_after": (("condition",), np.isin(preds, ctx.accepted_tokens())),
            "p_answer": (("condition",), np.asarray(p_answer)),
            "edges_kept": (("condition",), np.asarray(kept)),
            "edges_total": ((), np.int64(total)),
            **clean.correctness(),
            "open_layers": (("route",), np.asarray([layers.describe()[r] for r in ROUTES], dtype=object)),
            "layer_source": ((), np.asarray(choice.source, dtype=object)),
            "video_span": ((), np.asarray(video_span, dtype=object)),
        },
        coords={"condition": list(CONDITIONS), "route": list(ROUTES)},
    )

"""`mapflow report`: one self-contained HTML page (figures inlined) from a directory of result stores.

Each store is recognised by the study and prompt template in its provenance, drawn with the paper's figure for that
study, and given a short reading computed from its numbers. Figures are also written as PNG and PDF under
``figures/`` and tables as CSV under ``tables/``.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from . import figures, tables
from ..errors import MapflowError
from ..results.store import ResultStore, open_dataset

log = logging.getLogger(__name__)
OPEN_ENDED_TEMPLATES = ("llava_open_ended",)


@dataclass
class Store:
    name: str
    study: str
    model: str
    open_ended: bool
    ds: xr.Dataset
    provenance: dict


@dataclass
class Section:
    title: str
    paper: str
    parts: list[str] = field(default_factory=list)  # HTML fragments


def find_stores(results_dir: Path) -> list[Store]:
    stores = []
    for path in sorted(results_dir.glob("*.zarr")):
        try:
            provenance = ResultStore(path).provenance
            ds = open_dataset(path)
        except (MapflowError, OSError, ValueError, KeyError) as err:
            log.warning("skipping %s: %s", path, err)
            continue
        if ds.sizes.get("sample", 0) == 0:
            continue
        template = provenance.get("config", {}).get("prompt_template", "")
        stores.append(Store(path.stem, provenance["study"], provenance["model"]["name"],
                            template in OPEN_ENDED_TEMPLATES, ds, provenance))
    return stores


class ReportWriter:
    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.sections: list[Section] = []

    def section(self, title: str, paper: str) -> Section:
        self.sections.append(Section(title, paper))
        return self.sections[-1]

    def figure(self, section: Section, stem: str, make, caption: str) -> None:
        try:
            fig = make()
        except (MapflowError, ValueError, KeyError, IndexError) as err:
            section.parts.append(f"<p class='missing'>{html.escape(stem)}: not drawn ({html.escape(str(err))})</p>")
            return
        png, _ = figures.save_figure(fig, self.out_dir / "figures" / stem)
        data = base64.b64encode(png.read_bytes()).decode()
        section.parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(stem)}'>"
                             f"<figcaption>{html.escape(caption)} (<code>figures/{stem}.png|pdf</code>)"
                             "</figcaption></figure>")

    def table(self, section: Section, stem: str, table, caption: str) -> None:
        tables.write_table(table, self.out_dir / "tables" / f"{stem}.csv")
        section.parts.append(f"<p class='caption'>{html.escape(caption)} (<code>tables/{stem}.csv</code>)</p>"
                             + table.to_html(float_format=lambda v: f"{v:.1f}", na_rep="–", border=0))

    def reading(self, section: Section, text: str) -> None:
        section.parts.append(f"<p class='reading'>{html.escape(text)}</p>")

    def write(self, title: str, intro: str) -> Path:
        body = [f"<h1>{html.escape(title)}</h1>", intro]
        body.append("<ul class='toc'>" + "".join(f"<li><a href='#s{i}'>{html.escape(s.title)}</a> "
                                                f"<span>{html.escape(s.paper)}</span></li>"
                                                for i, s in enumerate(self.sections)) + "</ul>")
        for i, s in enumerate(self.sections):
            body.append(f"<section id='s{i}'><h2>{html.escape(s.title)} <span>{html.escape(s.paper)}</span></h2>"
                        + "".join(s.parts) + "</section>")
        page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>" \
               f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>"
        path = self.out_dir / "report.html"
        path.write_text(page)
        return path


STYLE = """body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em;color:#222}
h2 span,.toc span{color:#888;font-weight:normal;font-size:.8em}img{max-width:100%}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{padding:2px 8px;border-bottom:1px solid #ddd;
text-align:right}.reading{background:#f4f7fb;padding:.5em;border-left:3px solid #4a7}.missing{color:#a44}
figcaption,.caption{color:#555;font-size:.9em}code{background:#eee;padding:0 3px}"""


# ---------------------------------------------------------------------------------------------------------------
# readings: one or two sentences computed from the numbers


def strongest_drop(ds: xr.Dataset, flow: str) -> tuple[int, float]:
    """(1-based layer, mean rel_change %) where the flow's knockout lowers the answer probability most."""
    mean = ds["rel_change"].sel(flow=flow).mean("sample", skipna=True)
    if "layer" not in mean.dims or not np.isfinite(mean.values).any():
        return -1, float("nan")
    i = int(np.nanargmin(mean.values))
    return int(mean["layer"].values[i]) + 1, float(mean.values[i])


def _measured(ds: xr.Dataset) -> int:
    return int(ds["knocked_out"].values.sum()) if "knocked_out" in ds else ds.sizes["sample"]


def _interval(ds: xr.Dataset) -> int:
    """The paper's 5-layer bins, or 2-layer bins on shallow models (the 8-layer organisms)."""
    return 5 if ds.sizes.get("layer", 0) > 10 else 2


def planted_note(store: Store) -> str | None:
    """What the model's training planted (its mapflow.json ``planted_routes``), in the report's 1-based layers, so a
    reading can set it next to what the analysis found; None for models without planted routes."""
    meta_file = Path(store.provenance.get("model", {}).get("path", "")) / "mapflow.json"
    try:
        routes = json.loads(meta_file.read_text()).get("planted_routes")
    except (OSError, ValueError):
        return None
    if not routes:
        return None
    parts = [f"{flow} open in layers " + ", ".join(f"{a + 1}-{b}" for a, b in ranges) if ranges
             else f"{flow} closed in every layer" for flow, ranges in routes.items()]
    return f"Planted in {store.model} by its training masks: " + "; ".join(parts) + "."


def flow_reading(ds: xr.Dataset) -> str:
    parts = []
    for flow in ds["flow"].values:
        layer, value = strongest_drop(ds, str(flow))
        if layer > 0:
            parts.append(f"{flow}: strongest drop {value:.1f} % at layer {layer}")
    return f"{_measured(ds)} samples measured. " + "; ".join(parts) + "."


def build_report(results_dir, out_html=None) -> Path:
    """Assemble the report for every store in ``results_dir``; returns the HTML path."""
    results_dir = Path(results_dir)
    stores = find_stores(results_dir)
    if not stores:
        raise MapflowError(f"no mapflow result store with samples in {results_dir}")
    by_study: dict[tuple[str, bool], list[Store]] = defaultdict(list)
    for store in stores:  # screen estimates get their own sections, never drawn as exact knockouts
        screened = store.provenance.get("config", {}).get("method") == "screen"
        by_study[(store.study + (":screen" if screened else ""), store.open_ended)].append(store)
    writer = ReportWriter(results_dir)
    _cross_frame(writer, by_study)
    _knockout_flows(writer, by_study)
    _logit_lens(writer, by_study)
    _attention(writer, by_study)
    _answer_probability(writer, by_study)
    _pathways(writer, by_study)
    _failures(writer, by_study)
    _open_ended(writer, by_study)
    from .report_beyond import beyond_paper_sections

    beyond_paper_sections(writer, by_study, results_dir)
    suite = results_dir / "suite.json"
    timing = ""
    if suite.is_file():
        manifest = json.loads(suite.read_text())
        timing = (f"<p>Suite: {len(manifest['runs'])} runs, {manifest['limit_per_task']} samples per task "
                  f"(scaled per study), studies took {manifest.get('study_seconds', '?')} s.</p>")
    models = sorted({s.model for s in stores})
    intro = (f"<p>{len(stores)} result stores from <code>{html.escape(str(results_dir))}</code>; models: "
             f"{html.escape(', '.join(models))}. Layers are numbered from 1 as in the paper; changes are the mean "
             "over samples of the per-sample relative change of the answer probability, with 95 % bootstrap bands."
             f"</p>{timing}")
    path = writer.write("mapflow report: information flow in video LLMs", intro)
    if out_html is not None:
        Path(out_html).write_bytes(path.read_bytes())
        return Path(out_html)
    return path


def _planted_reading(w: ReportWriter, section: Section, store: Store) -> None:
    note = planted_note(store)
    if note:
        w.reading(section, note)


def _cross_frame(w: ReportWriter, by_study) -> None:
    # video models first: they take the paper's green, image-style models its pink
    stores = sorted(by_study.get(("cross_frame", False), []), key=lambda st: "frames" in st.model)
    if stores:
        s = w.section("Cross-frame interactions", "Fig. 2")
        w.figure(s, "fig2_cross_frame", lambda: figures.model_overlay_figure({st.model: st.ds for st in stores}),
                 "Blocking attention from later frames to earlier frames in a window of layers, per model")
        drops = [(st, *strongest_drop(st.ds, "cross_frame")) for st in stores]
        w.reading(s, " ".join(f"{st.model}: strongest drop {value:.1f} % at layer {layer} ({_measured(st.ds)} "
                              "samples)." for st, layer, value in drops))
    for st in by_study.get(("progressive", False), []):
        s = w.section(f"Progressive cross-frame blocking, {st.model}", "Fig. V")
        w.figure(s, f"figV_progressive_{st.model}", lambda st=st: figures.progressive_figure(st.ds),
                 "Accuracy with cross-frame attention blocked in layers 1..l (bottom_up) and l..L (top_down)")
        accuracy = figures.progressive_accuracy(st.ds)
        w.reading(s, f"Bottom-up blocking up to layer 1 leaves {float(accuracy.sel(direction='bottom_up')[0]):.0f} % "
                     f"accuracy and up to the last layer {float(accuracy.sel(direction='bottom_up')[-1]):.0f} %; "
                     f"top-down blocking from the last layer leaves "
                     f"{float(accuracy.sel(direction='top_down')[-1]):.0f} %.")
    for st in by_study.get(("cross_frame_halves", False), []):
        s = w.section(f"First half vs second half, {st.model}", "Table 2 / Table B")
        table = tables.halves_table(st.ds)
        w.table(s, f"table2_halves_{st.model}", table, "Accuracy (%) after cross-frame knockout per layer set; "
                "drop in points and among originally correct samples")
        overall = table.loc["all"]
        w.reading(s, f"Over all tasks the first-half knockout costs {overall['first_half_drop_pts']:.1f} points and "
                     f"the second-half one {overall['second_half_drop_pts']:.1f}.")
        if "answer_text" in st.ds:
            w.table(s, f"table2_answers_{st.model}", tables.generated_answers(st.ds, limit=2),
                    "Answers generated greedily, clean and under each knockout")
    for st in by_study.get(("window_sizes", False), []):
        s = w.section(f"Window sizes, {st.model}", "Fig. W")
        w.figure(s, f"figW_window_sizes_{st.model}", lambda st=st: figures.window_size_figure(st.ds),
                 "Cross-frame knockout with centred windows of several sizes")


def _knockout_flows(w: ReportWriter, by_study) -> None:
    for study, title, paper in (("information_flow", "Video, question and last position", "Fig. 3"),
                                ("question_options_to_last", "Question and options to the last position", "Fig. 6"),
                                ("into_true_option", "Flows into the true option", "Fig. 7")):
        for st in by_study.get((study, False), []):
            s = w.section(f"{title}, {st.model}", paper)
            w.figure(s, f"{paper.split()[-1]}_{study}_{st.model}".replace(".", ""),
                     lambda st=st: figures.flow_figure(st.ds), f"{title}: knockout per flow")
            w.reading(s, flow_reading(st.ds))
            _planted_reading(w, s, st)
            if study == "information_flow":
                interval = _interval(st.ds)
                w.table(s, f"tableE_intervals_{st.model}",
                        tables.mark_significant(tables.interval_table(st.ds, interval=interval)),
                        f"Mean change (%) per {interval}-layer interval; * marks the paper's significance rule "
                        "(< -5 %)")


def _logit_lens(w: ReportWriter, by_study) -> None:
    for st in by_study.get(("logit_lens", False), []):
        s = w.section(f"Logit lens on video tokens, {st.model}", "Fig. 4, Fig. T")
        interval = _interval(st.ds)
        min_hits = 100 if interval == 5 else 10
        w.figure(s, f"fig4_keywords_{st.model}", lambda st=st: figures.keyword_frequency_figure(
            st.ds, interval=interval, min_hits=min_hits), "Normalized keyword frequency per layer bin (ALL_NORM)")
        for kind in ("spatial", "temporal"):
            table = tables.keyword_frequency(st.ds, kind, interval=interval, min_hits=min_hits)
            if not table.empty:
                w.table(s, f"fig4_{kind}_{st.model}", table, f"{kind} keyword hits, normalized per keyword")
        w.figure(s, f"figT_overlay_{st.model}", lambda st=st: figures.logit_lens_overlay_figure(
            st.ds, 0, interval=interval), "Keyword hits at their video token on the frames (first sample)")
        _planted_reading(w, s, st)
        hits = (st.ds["keyword"].values != "").mean()
        w.reading(s, f"{100 * hits:.1f} % of (layer, video token) cells have a keyword as top-1 token "
                     f"(keyword lists: {st.ds.attrs.get('keywords', '?')}).")


def _attention(w: ReportWriter, by_study) -> None:
    for st in by_study.get(("attention_maps", False), []):
        s = w.section(f"Attention from question words to the video, {st.model}", "Fig. 5 / Fig. U")
        w.figure(s, f"fig5_attention_{st.model}", lambda st=st: figures.attention_map_figure(st.ds, 0, 0),
                 "log10(attention + 5e-5), head mean, clean vs cross-frame knockout (first sample, first query)")
        attention = st.ds["attention"]
        change = float(np.nanmean(np.abs(attention.sel(condition="cross_frame_knockout").values
                                          - attention.sel(condition="clean").values)))
        w.reading(s, f"Cross-frame knockout changes the question->video attention by {change:.4f} on average "
                     "(absolute, per cell).")


def _answer_probability(w: ReportWriter, by_study) -> None:
    for st in by_study.get(("answer_probability", False), []):
        s = w.section(f"Layer-wise answer probability, {st.model}", "Fig. 8")
        w.figure(s, f"fig8_answer_probability_{st.model}", lambda st=st: figures.answer_probability_figure(st.ds),
                 "Probability of the true and false options read at each layer (final norm + LM head)")
        _planted_reading(w, s, st)
        correct = st.ds.isel(sample=st.ds["correct"].values.astype(bool))
        if correct.sizes["sample"]:
            true_p = correct["p_option"].where(correct["is_true_option"]).max("option").mean("sample").values
            crossing = int(np.argmax(true_p > 50)) + 1 if (true_p > 50).any() else None
            w.reading(s, "The true option's probability passes 50 % at layer "
                      f"{crossing} of {len(true_p)}." if crossing else "The true option never passes 50 %.")


def _pathways(w: ReportWriter, by_study) -> None:
    for st in by_study.get(("effective_pathway", False), []):
        s = w.section(f"Effective pathways, {st.model}", "Table 3 / Table A / Table E(a)")
        table = tables.pathway_table(st.ds)
        _planted_reading(w, s, st)
        w.table(s, f"table3_pathways_{st.model}", table, "Accuracy (%) and kept attention edges (%) per condition")
        routes = {str(r): str(v) for r, v in zip(st.ds["route"].values, st.ds["open_layers"].values[0])}
        row = table.loc["all"]
        w.reading(s, f"Open layers (0-based): {routes}. Keeping {row['effective_kept_%']:.0f} % of the edges, the "
                     f"effective pathway gives {row['effective_acc']:.1f} % accuracy vs {row['clean_acc']:.1f} % "
                     f"clean and {row['random_acc']:.1f} % for random blocking at the same budget; the strict "
                     f"variant gives {row['effective_strict_acc']:.1f} %.")
        if row["effective_acc"] < row["clean_acc"] - 10:
            w.reading(s, "The paper's pathway template (video -> question -> last, video -> last always cut) loses "
                         "much of the accuracy here: this model routes information differently (see the knockout "
                         "figures above, e.g. video -> last).")


def _failures(w: ReportWriter, by_study) -> None:
    for st in by_study.get(("failure_cases", False), []):
        s = w.section(f"Failure cases, {st.model}", "Figs. AJ-AL")
        w.figure(s, f"figAJ_failure_split_{st.model}", lambda st=st: figures.failure_split_figure(st.ds),
                 "Wrong answers split by the sign of their cross-frame effect")
        w.figure(s, f"figAK_failure_options_{st.model}", lambda st=st: figures.flow_figure(
            st.ds, flows=[f for f in st.ds["flow"].values if str(f).endswith("->last")]),
            "Question and options -> last on wrong answers (tracking the predicted letter)")
        w.figure(s, f"figAL_failure_predicted_{st.model}", lambda st=st: figures.flow_figure(
            st.ds, flows=[f for f in st.ds["flow"].values if "predicted_option" in str(f)]),
            "Flows into the predicted false option")
        w.reading(s, flow_reading(st.ds))


def _open_ended(w: ReportWriter, by_study) -> None:
    for study, paper, make in (("cross_frame", "Fig. P", figures.flow_figure),
                               ("information_flow", "Fig. Q", figures.flow_figure),
                               ("answer_probability", "Fig. R",
                                lambda ds: figures.answer_probability_figure(ds, correct_only=False))):
        for st in by_study.get((study, True), []):
            s = w.section(f"Open-ended sentence completion: {study}, {st.model}", paper)
            w.figure(s, f"{paper.split()[-1]}_open_ended_{study}_{st.model}", lambda st=st, make=make: make(st.ds),
                     "Single-token sentence completion (appendix C.1)")
            if "rel_change" in st.ds:
                w.reading(s, flow_reading(st.ds))
    for st in by_study.get(("verb_anchors", False), []) + by_study.get(("verb_anchors", True), []):
        s = w.section(f"Verb anchors in generated answers, {st.model}", "Fig. S")
        w.figure(s, f"figS_verb_anchors_{st.model}", lambda st=st: figures.verb_anchor_figure(st.ds),
                 "Relative change of the n-th verb's probability per flow (appendix C.2)")
        found = st.ds["num_anchors"].values
        w.reading(s, f"{int((found >= 3).sum())} of {len(found)} responses had at least 3 verb anchors "
                     f"(detector: {st.ds.attrs.get('verb_detector', '?')}).")

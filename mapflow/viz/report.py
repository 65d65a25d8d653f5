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

from ..errors import MapflowError
from ..results.store import ResultStore, open_dataset
from . import figures, report_explore, tables

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
        stores.append(
            Store(
                path.stem,
                provenance["study"],
                provenance["model"]["name"],
                template in OPEN_ENDED_TEMPLATES,
                ds,
                provenance,
            )
        )
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
        (png,) = figures.save_figure(fig, self.out_dir / "figures" / stem, formats=("png",))
        png_bytes = png.read_bytes()
        mapping = report_explore.figure_map(fig, png_bytes)  # the PNG's layout, before the PDF draws it again
        figures.save_figure(fig, self.out_dir / "figures" / stem, formats=("pdf",))
        data = base64.b64encode(png_bytes).decode()
        caption_html = f"{html.escape(caption)} (<code>figures/{stem}.png|pdf</code>)"
        section.parts.append(report_explore.figure_html(data, stem, caption_html, mapping))

    def table(self, section: Section, stem: str, table, caption: str) -> None:
        tables.write_table(table, self.out_dir / "tables" / f"{stem}.csv")
        section.parts.append(
            f"<p class='caption'>{html.escape(caption)} (<code>tables/{stem}.csv</code>)</p><div class='table-box'>"
            + table.to_html(float_format=lambda v: f"{v:.1f}", na_rep="–", border=0)
            + "</div>"
        )

    def reading(self, section: Section, text: str) -> None:
        section.parts.append(f"<p class='reading'>{html.escape(text)}</p>")

    def write(self, title: str, intro: str) -> Path:
        body = [f"<h1>{html.escape(title)}</h1>", intro]
        body.append(
            "<ul class='toc'>"
            + "".join(
                f"<li><a href='#s{i}'>{html.escape(s.title)}</a> <span>{html.escape(s.paper)}</span></li>"
                for i, s in enumerate(self.sections)
            )
            + "</ul>"
        )
        for i, s in enumerate(self.sections):
            body.append(
                f"<section id='s{i}'><h2>{html.escape(s.title)} <span>{html.escape(s.paper)}</span></h2>"
                + "".join(s.parts)
                + "</section>"
            )
        page = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}\n{report_explore.STYLE}</style></head><body>{''.join(body)}"
            f"<script>{report_explore.SCRIPT}</script></body></html>"
        )
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


def measured_samples(ds: xr.Dataset) -> int:
    return int(ds["knocked_out"].values.sum()) if "knocked_out" in ds else ds.sizes["sample"]


def layer_interval(ds: xr.Dataset) -> int:
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
    parts = [
        f"{flow} open in layers " + ", ".join(f"{a + 1}-{b}" for a, b in ranges)
        if ranges
        else f"{flow} closed in every layer"
        for flow, ranges in routes.items()
    ]
    return f"Planted in {store.model} by its training masks: " + "; ".join(parts) + "."


def flow_reading(ds: xr.Dataset) -> str:
    parts = []
    for flow in ds["flow"].values:
        layer, value = strongest_drop(ds, str(flow))
        if layer > 0:
            parts.append(f"{flow}: strongest drop {value:.1f} % at layer {layer}")
    return f"{measured_samples(ds)} samples measured. " + "; ".join(parts) + "."


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
    for _, _, section, study_stores in study_sections(by_study):  # each study's own sections (its declared report)
        section(writer, study_stores)
    from .report_beyond import beyond_paper_sections

    beyond_paper_sections(writer, by_study, results_dir)
    from .report_pruning import pruning_sections  # beyond the paper: the map turned into speed (issue 27)

    pruning_sections(writer, by_study, results_dir)
    suite = results_dir / "suite.json"
    timing = ""
    if suite.is_file():
        manifest = json.loads(suite.read_text())
        timing = (
            f"<p>Suite: {len(manifest['runs'])} runs, {manifest['limit_per_task']} samples per task "
            f"(scaled per study), studies took {manifest.get('study_seconds', '?')} s.</p>"
        )
    models = sorted({s.model for s in stores})
    intro = (
        f"<p>{len(stores)} result stores from <code>{html.escape(str(results_dir))}</code>; models: "
        f"{html.escape(', '.join(models))}. Layers are numbered from 1 as in the paper; changes are the mean "
        "over samples of the per-sample relative change of the answer probability, with 95 % bootstrap bands."
        f"</p>{timing}"
    )
    path = writer.write("mapflow report: information flow in video LLMs", intro)
    if out_html is not None:
        Path(out_html).write_bytes(path.read_bytes())
        return Path(out_html)
    return path


def planted_reading(w: ReportWriter, section: Section, store: Store) -> None:
    note = planted_note(store)
    if note:
        w.reading(section, note)


def knockout_flow_section(w: ReportWriter, st: Store, study: str, title: str, paper: str) -> Section:
    """A knockout study's section: its flow figure, the strongest drop per flow and any planted route."""
    s = w.section(f"{title}, {st.model}", paper)
    w.figure(
        s,
        f"{paper.split()[-1]}_{study}_{st.model}".replace(".", ""),
        lambda: figures.flow_figure(st.ds),
        f"{title}: knockout per flow",
    )
    w.reading(s, flow_reading(st.ds))
    planted_reading(w, s, st)
    return s


def open_ended_section(w: ReportWriter, st: Store, study: str, paper: str, make) -> None:
    """Appendix C.1: a study run on single-token sentence completion instead of multiple choice."""
    s = w.section(f"Open-ended sentence completion: {study}, {st.model}", paper)
    w.figure(
        s,
        f"{paper.split()[-1]}_open_ended_{study}_{st.model}",
        lambda: make(st.ds),
        "Single-token sentence completion (appendix C.1)",
    )
    if "rel_change" in st.ds:
        w.reading(s, flow_reading(st.ds))


def study_sections(by_study) -> list[tuple[int, str, object, list[Store]]]:
    """(order, study, section function, its stores) for every section a study declares in its ``report``
    (`mapflow.analysis.declaration.ReportSection`: ``order`` (place in the report), ``section`` (a function
    ``(writer, stores)``) and ``stores`` (``"closed"``: multiple-choice stores, ``"open_ended"``, or ``"all"``))."""
    from ..analysis.declaration import declaration_of
    from ..analysis.runner import available_studies, load_study

    sections = []
    for study in available_studies():
        for entry in declaration_of(load_study(study)).report:
            kinds = {"closed": (False,), "open_ended": (True,), "all": (False, True)}[entry.stores]
            stores = [st for kind in kinds for st in by_study.get((study, kind), [])]
            if stores:
                sections.append((entry.order, study, entry.section, stores))
    return sorted(sections, key=lambda section: section[0])

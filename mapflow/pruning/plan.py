"""A pruning plan from a measured map: after which layer no measured route reads the video any more.

The rule (`prune_plan`, ``mapflow prune-plan``), on knockout stores (information_flow, cross_frame, or any study
whose cells knock out flows in sets of layers and keep ``rel_change`` and ``blocked_layers``):

1. The flows that read the video are those whose source is a video span (``video->question``, ``video->last``,
   ``video->X``) and the cross-frame flows (video -> video: a frame's tokens reading earlier frames).
2. A knockout cell is *harmful* when the mean relative change of the answer probability over the measured samples
   of some task is below ``threshold`` % (default -5, the paper's significance rule of Table E); the mean is taken
   per task, so a route one task uses is not averaged away by the others.
3. ``harmless_windows`` (default): a layer is *unread* by a flow when some knocked-out window of layers containing it
   was harmless for that flow; every other layer (in a harmful window only, or never knocked out) counts as read.
   A harmful window none of whose layers is read (each cleared by another harmless window: the flow is read in one
   layer or another of it, redundantly) counts as read whole. With window 1 this is exactly "the flow's knockout at
   that layer is harmful". ``window_centre``: the layers read are the centres of the harmful windows (the paper's
   reading of its window sweeps, Fig. 3); ``window_end``: their last layers (conservative).
4. L = the last layer that any video-reading flow reads; the plan drops every video token after layer L
   (`mapflow.pruning.spec.PruneSpec`, ``drop_after=L``). No layer read at all gives L = 0 (the contract drops after a
   layer; noted in the plan).
5. With ``frame_local=True``: the layers 0..L the cross-frame flows leave unread become frame-local (video tokens
   attend within their own frame and to the tokens before the video there).

On an effective_pathway store the open layers of its routes are the map: L is the last open layer of the
cross_frame and video_question routes, the frame-local layers those up to L where cross_frame is closed (the
store's accuracy with only those routes open is its evidence; recorded).

Several stores (of one model) combine: a layer read in any store is read. ``drop_video_after=L`` gives L directly.
The plan records the rule, the threshold, the layers read per flow, each source store (path, study, model and the
sha256 of its provenance) and the `PruneSpec` as a dict; `PrunePlan.save` writes it as JSON.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import MapflowError
from ..knockout.flows import CROSS_FRAME_KINDS, FRAME_DISTANCE_KINDS, Flow
from ..results.tasks import by_task
from .spec import PruneSpec

PLAN_RULES = ("harmless_windows", "window_centre", "window_end")
DEFAULT_RULE = "harmless_windows"
DEFAULT_THRESHOLD = -5.0  # %: the paper's significance rule (Table E: a mean change below -5 %)
PLAN_FORMAT = "mapflow-prune-plan/1"
EXPLICIT_RULE = "explicit"
PATHWAY_RULE = "effective_pathway_layers"


@dataclass(frozen=True)
class PrunePlan:
    """A `PruneSpec` and how it was chosen: the rule, its threshold, what each source store says."""

    spec: PruneSpec
    rule: str
    threshold: float | None
    measured_layers: int | None  # decoder layers the sources cover (None: an explicit plan)
    read_layers: dict = field(default_factory=dict)  # flow (or route) -> layers read (0-based)
    sources: tuple = ()  # one dict per store: path, study, model, weights_hash, provenance_sha256, samples
    notes: tuple = ()

    @property
    def drop_after(self) -> int:
        return self.spec.drop_after

    def describe(self) -> str:
        """One paragraph: the plan and the evidence it rests on."""
        text = f"plan: {self.spec.label()} (rule {self.rule}"
        text += f", threshold {self.threshold:g} %)" if self.threshold is not None else ")"
        for flow, layers in self.read_layers.items():
            text += f"\n  {flow}: read in layers {_layer_text(layers)}"
        for source in self.sources:
            text += f"\n  from {source['path']} ({source['study']}, {source['model']}, {source['samples']} samples)"
        for note in self.notes:
            text += f"\n  note: {note}"
        return text

    def to_dict(self) -> dict:
        return {
            "format": PLAN_FORMAT,
            "spec": self.spec.to_dict(),
            "label": self.spec.label(),
            "rule": self.rule,
            "rule_text": RULE_TEXT[self.rule],
            "threshold": self.threshold,
            "measured_layers": self.measured_layers,
            "read_layers": {flow: list(layers) for flow, layers in self.read_layers.items()},
            "sources": [dict(s) for s in self.sources],
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: dict, where: str = "the plan") -> PrunePlan:
        if d.get("format") != PLAN_FORMAT:
            raise MapflowError(f"{where} is not a mapflow pruning plan (format {d.get('format')!r}, not {PLAN_FORMAT})")
        try:
            spec = PruneSpec.from_dict(d["spec"])
        except (KeyError, TypeError, ValueError) as err:
            raise MapflowError(f"{where}: its 'spec' cannot be read ({err})") from None
        return cls(
            spec=spec,
            rule=d.get("rule", EXPLICIT_RULE),
            threshold=d.get("threshold"),
            measured_layers=d.get("measured_layers"),
            read_layers={k: tuple(v) for k, v in d.get("read_layers", {}).items()},
            sources=tuple(d.get("sources", ())),
            notes=tuple(d.get("notes", ())),
        )

    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path) -> PrunePlan:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise MapflowError(f"plan file {path} does not exist (write one with `mapflow prune-plan`)") from None
        except ValueError as err:
            raise MapflowError(f"plan file {path} is not valid JSON ({err})") from None
        return cls.from_dict(data, where=f"plan file {path}")


RULE_TEXT = {
    "harmless_windows": (
        "a layer is unread by a video-reading flow when some knocked-out window containing it changed the answer "
        "probability by no less than the threshold (mean per task), and a harmful window with no read layer counts "
        "whole; L = the last layer any video-reading flow reads"
    ),
    "window_end": (
        "the layers a video-reading flow reads are the last layers of its windows whose knockout lowered the answer "
        "probability below the threshold (mean per task; conservative); L = the last of them"
    ),
    "window_centre": (
        "the layers a video-reading flow reads are the centres of its windows whose knockout lowered the answer "
        "probability below the threshold (mean per task); L = the last of them"
    ),
    PATHWAY_RULE: "L = the last open layer of the effective pathway's cross_frame and video_question routes",
    EXPLICIT_RULE: "L given explicitly (--drop-video-after)",
}


def prune_plan(
    stores=(),
    *,
    threshold: float = DEFAULT_THRESHOLD,
    rule: str = DEFAULT_RULE,
    frame_local: bool = False,
    drop_video_after: int | None = None,
) -> PrunePlan:
    """The pruning plan of ``stores`` (a store path, an opened Dataset, or a list of them) by ``rule`` (module doc),
    or, with ``drop_video_after=L``, the plan that drops the video after layer L (the stores, if any, recorded)."""
    if rule not in PLAN_RULES:
        raise MapflowError(f"plan rule '{rule}': choose one of {', '.join(PLAN_RULES)}")
    loaded = [_load(store) for store in _as_list(stores)]
    sources = tuple(_source_record(ds, where) for ds, where in loaded)
    _check_one_model(sources)
    if drop_video_after is not None:
        if int(drop_video_after) < 0:
            raise MapflowError(f"--drop-video-after {drop_video_after}: give a layer index >= 0")
        return PrunePlan(
            PruneSpec(drop_after=int(drop_video_after), drop="video"),
            EXPLICIT_RULE,
            None,
            None,
            sources=sources,
        )
    if not loaded:
        raise MapflowError(
            "a pruning plan needs knockout stores (information_flow, cross_frame, effective_pathway) or an explicit "
            "--drop-video-after L"
        )
    reads = [_read_layers(ds, where, rule, float(threshold)) for ds, where in loaded]
    num_layers = max(r.num_layers for r in reads)
    read_layers: dict[str, set[int]] = {}
    for r in reads:
        for flow, layers in r.video.items():
            read_layers.setdefault(flow, set()).update(layers)
    every = set().union(*read_layers.values())
    notes = [note for r in reads for note in r.notes]
    if every:
        last = max(every)
    else:
        last = 0
        notes.append("no measured route reads the video: L = 0 (the video is still in the sequence in layer 0)")
    frame_local_layers: tuple[int, ...] = ()
    if frame_local:
        cross = [r.cross_frame for r in reads if r.cross_frame is not None]
        if not cross:
            raise MapflowError(
                "frame-local layers need a cross-frame measurement: none of "
                + ", ".join(where for _, where in loaded)
                + " knocks out cross_frame (add a cross_frame or effective_pathway store)"
            )
        read_across = set().union(*cross)
        frame_local_layers = tuple(layer for layer in range(last + 1) if layer not in read_across)
    is_pathway = all(r.rule == PATHWAY_RULE for r in reads)
    return PrunePlan(
        PruneSpec(drop_after=last, drop="video", frame_local_layers=frame_local_layers),
        PATHWAY_RULE if is_pathway else rule,
        None if is_pathway else float(threshold),
        num_layers,
        read_layers={flow: tuple(sorted(layers)) for flow, layers in read_layers.items()},
        sources=sources,
        notes=tuple(notes),
    )


# ---------------------------------------------------------------------------------------------------------------
# reading one store


@dataclass
class _Reads:
    video: dict  # video-reading flow -> layers read
    cross_frame: set | None  # layers the cross-frame flows read (None: not measured)
    num_layers: int
    rule: str
    notes: list


def _read_layers(ds: xr.Dataset, where: str, rule: str, threshold: float) -> _Reads:
    if "open_layers" in ds.variables or "route" in ds.dims:
        return _pathway_reads(ds, where)
    return _knockout_reads(ds, where, rule, threshold)


def _knockout_reads(ds: xr.Dataset, where: str, rule: str, threshold: float) -> _Reads:
    from ..results.method import require_exact

    study = _study(ds)
    for name in ("rel_change", "blocked_layers", "task"):
        if name not in ds.variables:
            raise MapflowError(
                f"store {where} (study {study}) has no '{name}': a pruning plan reads knockout stores "
                "(information_flow, cross_frame, ...: rel_change per flow and blocked layers) or effective_pathway"
            )
    require_exact(ds, "a pruning plan", where)
    cell_dims = ds["blocked_layers"].dims
    extra = [d for d in ds["rel_change"].dims if d not in ("sample", "flow", *cell_dims)]
    if len(cell_dims) != 1 or "flow" not in ds["rel_change"].dims or extra:
        raise MapflowError(
            f"store {where} (study {study}): rel_change has dims {tuple(ds['rel_change'].dims)}; a pruning plan reads "
            "(sample, flow, <layer cells>) with one blocked_layers per cell"
            + (f" (remove the extra dims {extra}, e.g. select one window size)" if extra else "")
        )
    cell_dim = cell_dims[0]
    blocked = [_parse_blocked(text, where) for text in ds["blocked_layers"].values]
    num_layers = max((max(b) for b in blocked if b), default=-1) + 1
    if rule == "window_centre" and cell_dim != "layer":
        raise MapflowError(
            f"store {where} (study {study}): rule window_centre needs a sweep over 'layer' (its cells are "
            f"'{cell_dim}'); use rule harmless_windows"
        )
    harmful = _harmful_cells(ds, where, threshold)  # (flow, cell) bool
    flows = [str(f) for f in ds["flow"].values]
    video, cross_frame = {}, None
    for i, flow in enumerate(flows):
        reads_video, across = _flow_kind(flow)
        if not reads_video:
            continue
        if rule == "harmless_windows":
            read = _read_by_harmless_windows(blocked, harmful[i], num_layers)
        elif rule == "window_end":
            read = {max(b) for b, bad in zip(blocked, harmful[i]) if bad and b}
        else:
            read = {int(c) for c, bad in zip(ds["layer"].values, harmful[i]) if bad}
        video[flow] = read
        if across:
            cross_frame = read if cross_frame is None else cross_frame | read
    if not video:
        raise MapflowError(
            f"store {where} (study {study}) knocks out no flow from the video (flows: {', '.join(flows)}): give an "
            "information_flow, cross_frame or effective_pathway store"
        )
    return _Reads(video, cross_frame, num_layers, rule, [])


def _read_by_harmless_windows(blocked: list[tuple[int, ...]], harmful, num_layers: int) -> set[int]:
    """The layers no harmless window clears; then every harmful window must hold one of them: one that does not (each
    of its layers cleared by another window: the flow is read redundantly, in one layer or another) counts whole."""
    unread = set().union(*(set(b) for b, bad in zip(blocked, harmful) if not bad))
    read = {layer for layer in range(num_layers) if layer not in unread}
    for layers, bad in zip(blocked, harmful):
        if bad and not read & set(layers):
            read |= set(layers)
    return read


def _harmful_cells(ds: xr.Dataset, where: str, threshold: float) -> np.ndarray:
    """(flow, cell): some task's mean relative change over its measured samples is below ``threshold``."""
    change = ds["rel_change"]
    if "knocked_out" in ds.variables:
        change = change.where(ds["knocked_out"])
    change = change.transpose("sample", "flow", ...)
    harmful = np.zeros(change.shape[1:], dtype=bool)
    measured_any = False
    for _, samples in by_task(change, overall=None):
        part = np.asarray(samples.values, dtype=float)
        counts = np.isfinite(part).sum(0)
        if not counts.any():
            continue
        measured_any = True
        with np.errstate(invalid="ignore"):
            means = np.nansum(part, axis=0) / np.where(counts > 0, counts, 1)
        harmful |= (counts > 0) & (means < threshold)
    if not measured_any:
        raise MapflowError(f"store {where} has no measured sample (every knockout cell is NaN)")
    return harmful


def _pathway_reads(ds: xr.Dataset, where: str) -> _Reads:
    from ..readouts.pathways import parse_layers

    study = _study(ds)
    for name in ("open_layers", "route"):
        if name not in ds.variables:
            raise MapflowError(f"store {where} (study {study}) has no '{name}' (an effective_pathway store has both)")
    texts = np.asarray(ds["open_layers"].transpose("sample", "route").values, dtype=str)
    if len({tuple(row) for row in texts}) != 1:
        raise MapflowError(f"store {where}: its samples were measured with different open layers; cannot plan")
    routes = [str(r) for r in ds["route"].values]
    layers = parse_layers(";".join(f"{route}={text}" for route, text in zip(routes, texts[0]) if text))
    video = {"cross_frame": set(layers.cross_frame), "video_question": set(layers.video_question)}
    num_layers = max((max(v) for v in (*video.values(), set(layers.question_last)) if v), default=-1) + 1
    notes = []
    if "correct_after" in ds.variables and "condition" in ds.dims:
        accuracy = {
            str(c): 100 * float(np.mean(ds["correct_after"].sel(condition=c).values))
            for c in ds["condition"].values
            if str(c) in ("clean", "effective")
        }
        if len(accuracy) == 2:
            notes.append(
                f"{where}: accuracy with only the pathway open {accuracy['effective']:.1f} % vs "
                f"{accuracy['clean']:.1f} % clean ({ds.sizes['sample']} samples)"
            )
    return _Reads(video, set(layers.cross_frame), num_layers, PATHWAY_RULE, notes)


def _flow_kind(flow: str) -> tuple[bool, bool]:
    """(reads the video, is cross-frame) for a stored flow label."""
    try:
        blocks = Flow.parse(flow).blocks
    except Exception:  # a label this version cannot parse: not a video flow we can reason about
        return False, False
    across = any(b.source in CROSS_FRAME_KINDS or b.source in FRAME_DISTANCE_KINDS for b in blocks)
    from_video = any(b.source.startswith(("video", "frame_")) for b in blocks)
    return across or from_video, across


def _parse_blocked(text, where: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        raise MapflowError(f"store {where}: blocked_layers '{text}' is not a list of layer indices") from None


# ---------------------------------------------------------------------------------------------------------------
# stores and their provenance


def _as_list(stores) -> list:
    if stores is None:
        return []
    if isinstance(stores, (str, Path, xr.Dataset)):
        return [stores]
    return list(stores)


def _load(store) -> tuple[xr.Dataset, str]:
    if isinstance(store, xr.Dataset):
        return store, f"<dataset of {_study(store)}>"
    from ..results.store import open_dataset

    path = Path(store)
    if not path.exists():
        raise MapflowError(f"store {path} does not exist")
    try:
        ds = open_dataset(path)
    except MapflowError:
        raise
    except (OSError, ValueError, KeyError) as err:
        raise MapflowError(f"store {path} cannot be opened as a mapflow result store ({err})") from None
    if ds.sizes.get("sample", 0) == 0:
        raise MapflowError(f"store {path} holds no sample")
    return ds, str(path)


def _provenance(ds: xr.Dataset) -> dict:
    provenance = ds.attrs.get("provenance")
    return provenance if isinstance(provenance, dict) else {}


def _study(ds: xr.Dataset) -> str:
    return str(_provenance(ds).get("study", "unknown"))


def _source_record(ds: xr.Dataset, where: str) -> dict:
    provenance = _provenance(ds)
    model = provenance.get("model", {}) or {}
    digest = hashlib.sha256(json.dumps(provenance, sort_keys=True, default=str).encode()).hexdigest()
    return {
        "path": where,
        "study": _study(ds),
        "model": model.get("name"),
        "weights_hash": model.get("weights_hash"),
        "provenance_sha256": digest,
        "samples": int(ds.sizes.get("sample", 0)),
    }


def _check_one_model(sources) -> None:
    hashes = {s["weights_hash"] for s in sources if s["weights_hash"]}
    if len(hashes) > 1:
        listed = "; ".join(f"{s['path']}: {s['model']}" for s in sources)
        raise MapflowError(f"the stores measure different models ({listed}): a plan is derived from one model's map")


def _layer_text(layers) -> str:
    """(0, 1, 2, 5) -> "0-2, 5" (0-based, inclusive)."""
    layers = sorted(layers)
    if not layers:
        return "none"
    runs, start = [], layers[0]
    for prev, layer in zip(layers, [*layers[1:], None]):
        if layer is None or layer != prev + 1:
            runs.append(f"{start}-{prev}" if prev > start else f"{start}")
            start = layer
    return ", ".join(runs)

"""Effective pathways (paper §3.5, Table 3 / Table A / Table E): keep only the identified routes, cut the rest.

Per layer ``l`` the mask cuts, on top of causal attention (spec A6):

1. cross-frame edges (later frame -> earlier frame) outside the cross-frame layers;
2. video -> question (the whole question block) outside the video->question layers;
3. question -> last outside the question->last layers;
4. last -> last and 5. video -> last in every layer;
6. video -> video (diagonal included) from the end of the video->question layers on;
7. question -> question (diagonal included) from the end of the question->last layers on.

``strict=True`` also closes what the released code leaves open: prompt tokens after the video that are neither video,
question nor last (the ``USER:`` bridge, the post-prompt, the answer prompt) may not read video or question tokens in
any layer, so no indirect route carries them to the last position.

The layer sets are given, taken from the loaded model's preset (Table E(a), chosen by its family, depth and hidden
size; a model the table does not list is refused, never given a scaled preset), or derived from knockout results by
the paper's rule: 1-based intervals of 5 layers whose mean relative change is below -5 % (Table E).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from ..errors import KnockoutConfigError
from ..inputs.layout import TokenLayout
from ..knockout.flows import Flow, check_every_row_keeps_a_key

ROUTES = ("cross_frame", "video_question", "question_last")
# the knockout flow whose results decide each route's layers (Table E)
ROUTE_FLOWS = {"cross_frame": "cross_frame", "video_question": "video->question", "question_last": "question->last"}


@dataclass(frozen=True)
class PathwayLayers:
    """0-based layers in which each route stays open."""

    cross_frame: tuple[int, ...]
    video_question: tuple[int, ...]
    question_last: tuple[int, ...]

    @classmethod
    def from_ranges(cls, **ranges: tuple[int, int]) -> PathwayLayers:
        return cls(**{route: tuple(range(*ranges[route])) for route in ROUTES})

    def open_until(self, route: str) -> int:
        """The first layer after the route's last open layer (where the late-layer cuts 6/7 begin)."""
        layers = getattr(self, route)
        return max(layers) + 1 if layers else 0

    def describe(self) -> dict[str, str]:
        return {route: _ranges_text(getattr(self, route)) for route in ROUTES}


@dataclass(frozen=True)
class PathwayPreset:
    """One model's effective-pathway ranges as the paper gives them (Table E(a)) and the released script hard-codes
    them (spec A6): 0-based, half-open.

    ``key`` is the model shape the preset is chosen for without ``--option preset``: (adapter family, decoder layers,
    hidden size) of the language model (`model_key`). ``video_span`` is the span the video rules (video -> question,
    video -> last, video -> video) cut: ``video`` (feature tokens, mapflow's) or ``video_block`` (feature tokens with
    the processor's frame labels, VideoLLaMA3's released range)."""

    name: str
    model: str  # the paper's model the ranges were derived on
    num_layers: int
    ranges: dict
    key: tuple[str, int, int] | None  # None: only by name (a variant of a keyed preset)
    video_span: str = "video"
    source: str = "Table E(a); spec A6"

    def layers(self) -> PathwayLayers:
        return PathwayLayers.from_ranges(**self.ranges)


# Table E(a) (the paper's L-names, 1-based inclusive) = the released scripts' `--target` ranges (spec A6). Keys: the
# published language models' config values (num_hidden_layers, hidden_size): Vicuna-7B-v1.5 32/4096, Vicuna-13B-v1.5
# 40/5120 (LLaVA-NeXT-Video-FT, loaded as llava_next_video), Phi-3-mini-128k-instruct 32/3072 (Mini-InternVL-4B),
# Qwen2.5-7B 28/3584 (VideoLLaMA3-7B).
PRESETS = {
    p.name: p
    for p in (
        PathwayPreset(
            "llava-7b",
            "LLaVA-NeXT-7B-Video-FT",
            32,
            dict(cross_frame=(5, 15), video_question=(5, 20), question_last=(15, 25)),
            ("llava_next_video", 32, 4096),
        ),
        PathwayPreset(
            "llava-13b",
            "LLaVA-NeXT-13B-Video-FT",
            40,
            dict(cross_frame=(5, 15), video_question=(5, 20), question_last=(15, 30)),
            ("llava_next_video", 40, 5120),
        ),
        PathwayPreset(
            "internvl",
            "Mini-InternVL-4B-Video-FT",
            32,
            dict(cross_frame=(5, 15), video_question=(5, 20), question_last=(10, 30)),
            ("internvl", 32, 3072),
        ),
        PathwayPreset(
            "videollama3",
            "VideoLLaMA3-7B",
            28,
            dict(cross_frame=(0, 15), video_question=(5, 20), question_last=(20, 28)),
            ("videollama3", 28, 3584),
        ),
        # the released VideoLLaMA3 script: the same layers, its video range is the whole video block (labels included)
        PathwayPreset(
            "videollama3_released",
            "VideoLLaMA3-7B",
            28,
            dict(cross_frame=(0, 15), video_question=(5, 20), question_last=(20, 28)),
            None,
            video_span="video_block",
            source="effective_pathway_analysis_videollama3.py (spec A6, ranges)",
        ),
    )
}
VIDEO_SPANS = ("video", "video_block")


def model_key(adapter) -> tuple[str, int, int]:
    """What picks a preset: (family, decoder layers, hidden size) of the loaded model's language model. Depth alone
    would confuse Mini-InternVL-4B with LLaVA-7B; the family alone, the 7B with the 13B."""
    config = adapter.text_config
    return (str(adapter.family), int(config.num_hidden_layers), int(config.hidden_size))


def preset_for_model(key: tuple[str, int, int]) -> PathwayPreset:
    """Table E's preset for a model of this shape; a model the table does not list is refused (never a scaled
    preset), naming the two ways out."""
    for preset in PRESETS.values():
        if preset.key == tuple(key):
            return preset
    family, layers, hidden = key
    raise KnockoutConfigError(
        f"effective_pathway: Table E gives no layer ranges for this model ({family}, {layers} layers, hidden size "
        f"{hidden}); listed: "
        + "; ".join(
            f"{p.name} = {p.model} ({p.key[0]}, {p.key[1]} layers, hidden {p.key[2]})"
            for p in PRESETS.values()
            if p.key
        )
        + ". Give the ranges: --option ranges='cross_frame=A-B;video_question=A-B;question_last=A-B' (0-based, "
        "half-open), or derive them by the paper's rule from this model's knockouts: --option from=<cross_frame "
        "store>,<information_flow store> (a knockout sweep holding cross_frame, video->question and question->last; "
        "--option preset=NAME forces a listed model's ranges if its depth matches)"
    )


def preset_layers(name: str, num_layers: int) -> PathwayLayers:
    """A paper preset's layers, on a model of the preset's depth only (a preset is never scaled to another depth)."""
    return named_preset(name, num_layers).layers()


def named_preset(name: str, num_layers: int) -> PathwayPreset:
    if name not in PRESETS:
        raise KnockoutConfigError(f"unknown pathway preset '{name}'; known: {', '.join(PRESETS)}")
    preset = PRESETS[name]
    if preset.num_layers != num_layers:
        raise KnockoutConfigError(
            f"pathway preset '{name}' holds {preset.model}'s ranges for {preset.num_layers} layers; this model has "
            f"{num_layers} (presets are never scaled): give --option ranges=... or --option from=<cross_frame store>"
        )
    return preset


def parse_layers(text: str) -> PathwayLayers:
    """``"cross_frame=5-15;video_question=5-20;question_last=15-25"`` (0-based, half-open; ``,`` joins ranges)."""
    found = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        route, sep, ranges = part.partition("=")
        route = route.strip()
        if not sep or route not in ROUTES:
            raise KnockoutConfigError(
                f"cannot read pathway range '{part}': write ROUTE=A-B with ROUTE one of {', '.join(ROUTES)}"
            )
        layers = []
        for chunk in filter(None, ranges.split(",")):
            a, dash, b = chunk.partition("-")
            try:
                layers.extend(range(int(a), int(b)) if dash else [int(a)])
            except ValueError:
                raise KnockoutConfigError(f"cannot read layer range '{chunk}' in '{part}'") from None
        found[route] = tuple(sorted(set(layers)))
    missing = [r for r in ROUTES if r not in found]
    if missing:
        raise KnockoutConfigError(f"pathway ranges '{text}' miss route(s) {', '.join(missing)}")
    return PathwayLayers(**found)


# ---------------------------------------------------------------------------------------------------------------
# Deriving the layers from knockout results (Table E)


def interval_means(rel_change: xr.DataArray, interval: int = 5) -> xr.DataArray:
    """Mean relative change per flow over samples and over 1-based intervals of ``interval`` layers.

    ``rel_change`` has dims (sample, flow, layer); NaN cells (samples not knocked out) are left out. Returns dims
    (flow, interval) labelled ``L1-5``, ``L6-10``, ...
    """
    per_layer = rel_change.mean("sample", skipna=True)
    layers = per_layer["layer"].values
    starts = range(0, int(layers.max()) + 1, interval)
    labels, columns = [], []
    for start in starts:
        members = [layer for layer in layers if start <= layer < start + interval]
        labels.append(f"L{start + 1}-{min(start + interval, int(layers.max()) + 1)}")
        columns.append(per_layer.sel(layer=members).mean("layer", skipna=True))
    return xr.concat(columns, dim="interval").assign_coords(interval=labels).transpose("flow", "interval")


def derive_layers(rel_change: xr.DataArray, *, interval: int = 5, threshold: float = -5.0) -> PathwayLayers:
    """Each route is open in the union of the intervals where its flow's mean change is below ``threshold`` %."""
    means = interval_means(rel_change, interval)
    layers = {}
    for route, flow in ROUTE_FLOWS.items():
        if flow not in means["flow"].values:
            raise KnockoutConfigError(
                f"deriving pathway layers needs knockout results for flow '{flow}' "
                f"(found: {', '.join(map(str, means['flow'].values))})"
            )
        chosen = []
        for k, value in enumerate(means.sel(flow=flow).values):
            if np.isfinite(value) and value < threshold:
                chosen.extend(range(k * interval, (k + 1) * interval))
        num_layers = int(rel_change["layer"].max()) + 1
        layers[route] = tuple(i for i in chosen if i < num_layers)
    return PathwayLayers(**layers)


# ---------------------------------------------------------------------------------------------------------------
# Masks and edge counts


def check_layers(layers: PathwayLayers, num_layers: int) -> None:
    """Every open layer exists in the model (a range past its depth would silently open nothing)."""
    beyond = {route: [i for i in getattr(layers, route) if not 0 <= i < num_layers] for route in ROUTES}
    beyond = {route: found for route, found in beyond.items() if found}
    if beyond:
        raise KnockoutConfigError(
            f"pathway layers outside this model's 0..{num_layers - 1}: "
            + "; ".join(f"{route} {_ranges_text(tuple(found))}" for route, found in beyond.items())
        )


def pathway_masks(
    layout: TokenLayout, layers: PathwayLayers, num_layers: int, *, strict: bool = False, video_span: str = "video"
) -> list[np.ndarray]:
    """One boolean (L, L) blocked-edge matrix per decoder layer (True = cut). ``video_span``: the span the video
    rules cut (``video_block`` adds the processor's frame labels, as VideoLLaMA3's released script)."""
    if video_span not in VIDEO_SPANS:
        raise KnockoutConfigError(f"pathway video span '{video_span}': choose one of {', '.join(VIDEO_SPANS)}")
    n = layout.seq_len
    video = layout.positions(video_span)
    question = layout.positions("question")
    last = np.asarray([layout.last])
    cross_frame = Flow.parse("cross_frame").block_matrix(layout)

    def block(targets, sources):
        out = np.zeros((n, n), dtype=bool)
        out[np.ix_(targets, sources)] = True
        return out

    video_to_question = block(question, video)
    question_to_last = block(last, question)
    always = block(last, last) | block(last, video)
    video_to_video = block(video, video)
    question_to_question = block(question, question)
    bridges = np.zeros((n, n), dtype=bool)
    if strict:
        others = np.setdiff1d(np.arange(video.min(), n), np.concatenate([video, question, last]))
        bridges = block(others, np.concatenate([video, question]))

    masks = []
    for layer in range(num_layers):
        blocked = always | bridges
        if layer not in layers.cross_frame:
            blocked = blocked | cross_frame
        if layer not in layers.video_question:
            blocked = blocked | video_to_question
        if layer not in layers.question_last:
            blocked = blocked | question_to_last
        if layer >= layers.open_until("video_question"):
            blocked = blocked | video_to_video
        if layer >= layers.open_until("question_last"):
            blocked = blocked | question_to_question
        check_every_row_keeps_a_key(blocked, f"effective pathway, layer {layer}")
        masks.append(blocked)
    return masks


def causal_edges(seq_len: int) -> int:
    return seq_len * (seq_len + 1) // 2


def kept_edges(masks: list[np.ndarray]) -> int:
    """Attention edges left over all layers (once per layer, not per head, as the paper counts)."""
    n = masks[0].shape[0]
    causal = np.tril(np.ones((n, n), dtype=bool))
    return int(sum((causal & ~m).sum() for m in masks))


def random_masks(
    layout: TokenLayout, num_blocked: int, num_layers: int, rng: np.random.Generator, *, video_span: str = "video"
) -> list[np.ndarray]:
    """The random-blocking control: in every layer independently, ``num_blocked // num_layers`` causal edges drawn
    uniformly (without replacement) among pairs whose query and key are both at or after the first position of
    ``video_span`` (diagonal included, the system prompt never touched: spec A6)."""
    n = layout.seq_len
    first = int(layout.positions(video_span).min())
    rows, cols = np.tril_indices(n - first)
    rows, cols = rows + first, cols + first
    per_layer = min(num_blocked // num_layers, rows.size)
    masks = []
    for layer in range(num_layers):
        chosen = rng.choice(rows.size, size=per_layer, replace=False)
        blocked = np.zeros((n, n), dtype=bool)
        blocked[rows[chosen], cols[chosen]] = True
        check_every_row_keeps_a_key(blocked, f"random blocking, layer {layer}")
        masks.append(blocked)
    return masks


def _ranges_text(layers: tuple[int, ...]) -> str:
    """``(5, 6, 7, 10)`` -> ``"5-8,10-11"`` (0-based, half-open)."""
    if not layers:
        return ""
    parts, start, prev = [], layers[0], layers[0]
    for layer in layers[1:]:
        if layer != prev + 1:
            parts.append(f"{start}-{prev + 1}")
            start = layer
        prev = layer
    parts.append(f"{start}-{prev + 1}")
    return ",".join(parts)

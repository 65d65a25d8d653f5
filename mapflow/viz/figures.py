"""The paper's figures, each drawn from a results store (an xarray Dataset from `mapflow.results.store.open_dataset`).

Every function returns a matplotlib Figure (Agg, no pyplot state); `save_figure` writes it as PNG and PDF. A figure
drawn from a store of the screen's first-order estimates (``--plan screen``) carries `SCREEN_MARK` as its title.

| paper | function | study |
|---|---|---|
| Fig. 2 | `model_overlay_figure` | cross_frame on two models |
| Fig. 3, 6, 7, P, Q, AK, AL | `flow_figure` | information_flow, question_options_to_last, into_true_option, failure_cases |
| Fig. AJ | `failure_split_figure` | failure_cases |
| Fig. W | `window_size_figure` | window_sizes |
| Fig. V | `progressive_figure` | progressive |
| Fig. 8, R | `answer_probability_figure` | answer_probability |
| Fig. 4 | `keyword_frequency_figure` | logit_lens |
| Fig. T | `logit_lens_overlay_figure` | logit_lens |
| Fig. 5, U | `attention_map_figure` | attention_maps |
| Fig. S | `verb_anchor_figure` | verb_anchors |
"""

from __future__ import annotations

import functools
import os
import textwrap
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..errors import MapflowError
from ..results.method import SCREEN_MARK, is_screen_store
from ..results.metrics import correct_after_knockout
from ..results.tasks import select_task, task_names
from .figure_data import panel, record_bars, record_cells, record_series
from .tables import keyword_frequency

MODEL_COLORS = ("tab:green", "tab:pink", "tab:blue", "tab:orange")  # the paper: green Video-FT, pink image model


def mark_screen(fig: Figure) -> Figure:
    """Title the figure as a screen estimate (once, kept above any title it has)."""
    current = fig.get_suptitle()
    if SCREEN_MARK not in current:
        fig.suptitle("\n".join(filter(None, (SCREEN_MARK, current))), color="tab:red", fontweight="bold")
    return fig


def screen_marked(function):
    """A figure function whose figure is marked when any store it draws (a Dataset argument, or one in a dict of
    them) holds screen estimates."""

    @functools.wraps(function)
    def draw(*args, **kwargs):
        fig = function(*args, **kwargs)
        given = [*args, *kwargs.values()]
        stores = [a for a in given if isinstance(a, xr.Dataset)]
        stores += [d for a in given if isinstance(a, dict) for d in a.values() if isinstance(d, xr.Dataset)]
        if any(is_screen_store(ds) for ds in stores):
            mark_screen(fig)
        return fig

    return draw


def new_figure(rows: int, cols: int, *, width: float = 4.5, height: float = 3.5, **subplot_kw):
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False, **subplot_kw)


def wrap_long_titles(fig: Figure) -> Figure:
    """Wrap every axes title wider than its axes (e.g. Fig. 4's keyword lists) onto as many lines as it needs, so no
    title runs into its neighbour or off the figure; titles that fit are left as they are."""
    fig.draw_without_rendering()  # lays the figure out, so title and axes widths are known
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        title = ax.title
        text = title.get_text()
        width, room = title.get_window_extent(renderer).width, ax.get_window_extent(renderer).width
        if text and width > room:
            longest = max(len(line) for line in text.splitlines())
            chars = max(10, int(longest * room / width))
            title.set_text("\n".join(textwrap.fill(line, chars) for line in text.splitlines()))
    return fig


def save_figure(fig: Figure, stem: str | Path, formats=("png", "pdf")) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` (long titles wrapped); returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    wrap_long_titles(fig)
    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        fig.savefig(path, format=fmt, dpi=130)
        paths.append(path)
    return paths


def _band(ax, x, values, label, color=None, ci=0.95, *, series=None, value_name="mean rel_change (%)", **style):
    """Mean over axis 0 with its bootstrap band (recorded for the report as ``series``, default {"series": label})."""
    mean, low, high = mean_and_ci(values, ci=ci)
    (line,) = ax.plot(x, mean, marker="o", markersize=3, label=label, color=color, **style)
    ax.fill_between(x, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
    record_series(
        ax,
        x,
        mean,
        series=series or {"series": label},
        low=low,
        high=high,
        n=np.isfinite(np.asarray(values, dtype=float)).sum(0),
        value_name=value_name,
        band=f"{ci:.0%} bootstrap CI",
    )
    return line


def _finish(ax, ylabel=None, zero=True):
    if zero:
        ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("layer (1-based)")
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


# ---- mean per layer with a bootstrap band (one panel per task) --------------------------------------------------

SAMPLE_DIM = "sample"


def mean_and_ci(
    values: np.ndarray, ci: float = 0.95, n_boot: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over axis 0 and its percentile-bootstrap confidence interval.

    `values` has shape (samples, ...). NaNs are left out separately for every
    cell of the trailing dims. Returns (mean, low, high), each of shape
    values.shape[1:]; all NaN where a cell has no finite value.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim == 0:
        raise ValueError("values needs a leading samples axis")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be between 0 and 1, got {ci}")
    rng = np.random.default_rng(seed)
    cells = values.reshape(values.shape[0], -1)
    tail = 100 * (1 - ci) / 2
    mean, low, high = (np.full(cells.shape[1], np.nan) for _ in range(3))
    for cell in range(cells.shape[1]):
        finite = cells[:, cell][np.isfinite(cells[:, cell])]
        if finite.size == 0:
            continue
        draws = rng.integers(0, finite.size, size=(n_boot, finite.size))
        boot_means = finite[draws].mean(axis=1)
        mean[cell] = finite.mean()
        low[cell], high[cell] = np.percentile(boot_means, [tail, 100 - tail])
    trailing = values.shape[1:]
    return mean.reshape(trailing), low.reshape(trailing), high.reshape(trailing)


@screen_marked
def rel_change_figure(
    ds: xr.Dataset, *, variable: str = "rel_change", ci: float = 0.95, n_boot: int = 1000, seed: int = 0
) -> Figure:
    """One panel per task: mean `variable` (already in %) per layer, one line per flow."""
    data = _variable_by_sample_flow_layer(ds, variable)
    if not np.isfinite(data.values).any():
        raise MapflowError(f"'{variable}' has no finite values to plot (every sample is NaN?)")
    tasks = task_names(data) if "task" in data.coords else [None]
    fig, axes = new_figure(1, len(tasks), width=5, height=4, sharey=True)
    for ax, task in zip(axes[0], tasks):
        in_task = data if task is None else select_task(data, task)
        panel(ax, task=task or "all samples")
        _draw_panel(ax, in_task, variable, ci, n_boot, seed)
        ax.set_title(f"{task or 'all samples'} (n={in_task.sizes[SAMPLE_DIM]} samples)")
    axes[0][0].set_ylabel(f"mean {variable} (%)")
    return fig


def plot_rel_change(
    ds: xr.Dataset,
    out_path: str | os.PathLike,
    *,
    variable: str = "rel_change",
    ci: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
) -> Path:
    """Save `rel_change_figure` as a PNG and return its path."""
    fig = rel_change_figure(ds, variable=variable, ci=ci, n_boot=n_boot, seed=seed)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, format="png", dpi=150)
    return out_path


def _variable_by_sample_flow_layer(ds: xr.Dataset, variable: str) -> xr.DataArray:
    if variable not in ds:
        raise MapflowError(f"dataset has no variable '{variable}' (has: {', '.join(map(str, ds.data_vars))})")
    data = ds[variable]
    if "flow" not in data.dims:
        data = data.expand_dims(flow=[variable])
    if set(data.dims) != {SAMPLE_DIM, "flow", "layer"}:
        raise MapflowError(f"'{variable}' must have dims (sample, flow, layer) to plot, got {data.dims}")
    return data.transpose(SAMPLE_DIM, "flow", "layer")


def _draw_panel(ax, data: xr.DataArray, variable: str, ci: float, n_boot: int, seed: int) -> None:
    mean, low, high = mean_and_ci(data.values, ci=ci, n_boot=n_boot, seed=seed)
    x = data["layer"].values + 1  # the paper numbers layers from 1
    counts = np.isfinite(data.values).sum(0)
    for i, flow in enumerate(data["flow"].values):
        (line,) = ax.plot(x, mean[i], marker="o", markersize=3, label=str(flow))
        ax.fill_between(x, low[i], high[i], color=line.get_color(), alpha=0.2, linewidth=0)
        record_series(
            ax,
            x,
            mean[i],
            series={"flow": flow},
            low=low[i],
            high=high[i],
            n=counts[i],
            value_name=f"mean {variable} (%)",
            band=f"{ci:.0%} bootstrap CI",
        )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("layer (1-based)")
    ax.legend(title=f"{variable}, {ci:.0%} CI", fontsize="small")
    ax.grid(alpha=0.3)


@screen_marked
def flow_figure(ds: xr.Dataset, *, variable: str = "rel_change", flows=None) -> Figure:
    """Mean % change of the answer probability per layer, one line per flow, one panel per task (Fig. 3, 6, 7...)."""
    if flows is not None:
        ds = ds.sel(flow=[f for f in ds["flow"].values if f in set(flows)])
    return rel_change_figure(ds, variable=variable)


@screen_marked
def model_overlay_figure(
    datasets: dict[str, xr.Dataset], *, flow: str = "cross_frame", variable: str = "rel_change"
) -> Figure:
    """One flow on several models in one figure (Fig. 2: the video model vs the image model)."""
    tasks = sorted(set().union(*(task_names(ds) for ds in datasets.values())))
    fig, axes = new_figure(1, len(tasks), sharey=True)
    for ax, task in zip(axes[0], tasks):
        for color, (label, ds) in zip(MODEL_COLORS, datasets.items()):
            part = select_task(ds, task)[variable].sel(flow=flow)
            panel(ax, task=task, flow=flow)
            _band(
                ax,
                part["layer"].values + 1,
                part.transpose("sample", "layer").values,
                f"{label} (n={int(np.isfinite(part.values).any(-1).sum())})",
                color,
                series={"model": label},
                value_name=f"mean {variable} (%)",
            )
        ax.set_title(f"{task}: {flow}")
        _finish(ax, f"mean {variable} (%)")
    return fig


@screen_marked
def failure_split_figure(ds: xr.Dataset, *, flow: str = "cross_frame") -> Figure:
    """Wrongly answered samples split by the sign of their mean effect of ``flow`` (Fig. AJ): for one group the
    knockout lowers the (wrong) prediction, for the other it raises it."""
    values = ds["rel_change"].sel(flow=flow).transpose("sample", "layer").values
    finite = np.isfinite(values).any(1)
    mean = np.where(finite, np.nanmean(np.where(np.isfinite(values), values, 0), axis=1), np.nan)
    fig, axes = new_figure(1, 1, width=5.5)
    ax = axes[0][0]
    x = ds["layer"].values + 1
    panel(ax, flow=flow)
    for label, keep, color in (
        ("probability decreases", mean <= 0, "tab:blue"),
        ("probability increases", mean > 0, "tab:red"),
    ):
        if keep.any():
            _band(ax, x, values[keep], f"{label} (n={int(keep.sum())})", color, series={"group": label})
    ax.set_title(f"failure cases: {flow} knockout, predicted (wrong) letter")
    _finish(ax, "mean rel_change (%)")
    return fig


@screen_marked
def window_size_figure(ds: xr.Dataset, *, flow: str = "cross_frame") -> Figure:
    """One line per window size (Fig. W), one panel per task."""
    tasks = task_names(ds)
    fig, axes = new_figure(1, len(tasks), sharey=True)
    for ax, task in zip(axes[0], tasks):
        part = select_task(ds, task)["rel_change"].sel(flow=flow)
        panel(ax, task=task, flow=flow)
        for k in part["window_size"].values:
            _band(
                ax,
                part["layer"].values + 1,
                part.sel(window_size=k).transpose("sample", "layer").values,
                f"k = {int(k)}",
                series={"window size": int(k)},
            )
        ax.set_title(f"{task}: {flow}")
        _finish(ax, "mean rel_change (%)")
    return fig


def progressive_accuracy(ds: xr.Dataset, flow: str = "cross_frame") -> xr.DataArray:
    """Accuracy (%) after knockout per (direction, layer) over knocked-out samples."""
    measured = ds.isel(sample=ds["knocked_out"].values.astype(bool))
    right = correct_after_knockout(measured).sel(flow=flow)
    return 100 * right.mean("sample")


@screen_marked
def progressive_figure(ds: xr.Dataset, *, flow: str = "cross_frame") -> Figure:
    """Accuracy when cross-frame attention is blocked in layers 1..l (bottom-up, green) and l..L (top-down, pink),
    with the clean accuracy as a dashed line (Fig. V); one panel per task."""
    tasks = task_names(ds)
    fig, axes = new_figure(1, len(tasks), sharey=True)
    for ax, task in zip(axes[0], tasks):
        part = select_task(ds, task)
        accuracy = progressive_accuracy(part, flow)
        measured = part["correct"].values[part["knocked_out"].values.astype(bool)]
        panel(ax, task=task, flow=flow)
        for direction, color in zip(accuracy["direction"].values, MODEL_COLORS):
            ax.plot(
                accuracy["layer"].values + 1,
                accuracy.sel(direction=direction).values,
                marker="o",
                markersize=3,
                color=color,
                label=str(direction),
            )
            record_series(
                ax,
                accuracy["layer"].values + 1,
                accuracy.sel(direction=direction).values,
                series={"direction": direction},
                n=len(measured),
                value_name="accuracy (%)",
            )
        ax.axhline(100 * measured.mean(), color="gray", linestyle="--", label="clean")
        ax.set_ylim(0, 105)
        ax.set_title(task)
        _finish(ax, "accuracy (%)", zero=False)
    return fig


@screen_marked
def answer_probability_figure(ds: xr.Dataset, *, correct_only: bool = True) -> Figure:
    """Probability (%) of the true and the false options per layer (Fig. 8); false options pooled, one row per false
    option per sample, as the paper; one panel per task."""
    if correct_only:
        ds = ds.isel(sample=ds["correct"].values.astype(bool))
    if ds.sizes["sample"] == 0:
        raise MapflowError("no correctly answered sample to draw the answer probability of")
    tasks = task_names(ds)
    fig, axes = new_figure(1, len(tasks), sharey=True)
    for ax, task in zip(axes[0], tasks):
        part = select_task(ds, task)
        probs = part["p_option"].transpose("sample", "option", "layer").values
        is_true = part["is_true_option"].transpose("sample", "option").values.astype(bool)
        x = part["layer"].values + 1
        panel(ax, task=task)
        _band(
            ax, x, probs[is_true], "true option", "tab:green", series={"option": "true"}, value_name="probability (%)"
        )
        false_rows = probs[~is_true]
        false_rows = false_rows[np.isfinite(false_rows).all(1)]
        if len(false_rows):
            _band(
                ax, x, false_rows, "false option", "tab:pink", series={"option": "false"}, value_name="probability (%)"
            )
        ax.set_title(f"{task} (n={part.sizes['sample']})")
        _finish(ax, "probability (%)", zero=False)
    return fig


@screen_marked
def keyword_frequency_figure(
    ds: xr.Dataset, *, interval: int = 5, min_hits: int = 100, samples: str | None = None, bins: str = "paper"
) -> Figure:
    """Normalized frequency of spatial and temporal keywords among the video tokens' top-1 logit-lens tokens, per
    layer bin (Fig. 4): bars of ALL_NORM, one panel per kind (samples and bins as `tables.keyword_frequency`)."""
    fig, axes = new_figure(1, 2, width=5)
    for ax, kind, color in zip(axes[0], ("spatial", "temporal"), ("tab:blue", "tab:orange")):
        table = keyword_frequency(ds, kind, interval=interval, min_hits=min_hits, samples=samples, bins=bins)
        if table.empty:
            ax.text(
                0.5, 0.5, f"no {kind} keyword reached {min_hits} hits", ha="center", va="center", transform=ax.transAxes
            )
        else:
            row = table.loc["ALL_NORM"].drop("hits")
            ax.bar(row.index, row.values, color=color)
            panel(ax, kind=kind)
            hits = np.rint(table.loc["ALL"].drop("hits").values * table.loc["ALL", "hits"])  # kept keywords' hits
            record_bars(ax, row.index, row.values, n=hits, x_name="layers", value_name="normalized frequency")
            ax.set_xlabel("layers (1-based)")
            ax.set_ylabel("normalized frequency")
            kept = [k for k in table.index if k not in ("ALL", "ALL_NORM")]
            ax.set_title(
                f"{kind} keywords ({len(kept)}: {', '.join(kept[:6])}{'…' if len(kept) > 6 else ''})", fontsize="medium"
            )
        ax.grid(alpha=0.3, axis="y")
    return fig


def _frame_strip(ax, pixels: np.ndarray):
    """Frames side by side; returns the width of one frame in pixels."""
    ax.imshow(np.concatenate(list(pixels), axis=1))
    ax.set_xticks([])
    ax.set_yticks([])
    return pixels.shape[2]


@screen_marked
def logit_lens_overlay_figure(
    ds: xr.Dataset, sample: str | int = 0, *, kind: str | None = None, interval: int = 5
) -> Figure:
    """Keyword hits drawn at their video token's place on the frames (Fig. T): one row of frames per layer bin."""
    one = ds.sel(sample=sample) if isinstance(sample, str) else ds.isel(sample=sample)
    if "frame_pixels" not in one:
        raise MapflowError("the store has no frame thumbnails (frame_pixels); rerun the logit_lens study")
    pixels = one["frame_pixels"].values
    t, grid_h, grid_w = (int(one["frame"].max()) + 1, int(one["row"].max()) + 1, int(one["col"].max()) + 1)
    num_layers = one.sizes["layer"]
    bins = list(range(0, num_layers, interval))
    fig, axes = new_figure(len(bins), 1, width=1.6 * len(pixels), height=1.8)
    size = pixels.shape[1]
    frame_of_token = one["frame"].values
    for ax, start in zip(axes[:, 0], bins):
        width = _frame_strip(ax, pixels)
        for layer in range(start, min(start + interval, num_layers)):
            words = one["keyword"].sel(layer=layer).values
            kinds = one["keyword_kind"].sel(layer=layer).values
            for token in np.flatnonzero(words != ""):
                if kind is not None and kinds[token] != kind:
                    continue
                frame = int(frame_of_token[token]) * len(pixels) // t
                x = frame * width + (int(one["col"].values[token]) + 0.5) * width / grid_w
                y = (int(one["row"].values[token]) + 0.5) * size / grid_h
                ax.text(
                    x,
                    y,
                    str(words[token]),
                    fontsize=6,
                    ha="center",
                    va="center",
                    color="orange" if kinds[token] == "temporal" else "cyan",
                )
        ax.set_ylabel(f"L{start + 1}-{min(start + interval, num_layers)}", fontsize="small")
    axes[0][0].set_title(
        f"{one['sample'].values}: logit-lens keywords on video tokens ({kind or 'spatial: cyan, temporal: orange'})",
        fontsize="small",
    )
    return fig


@screen_marked
def attention_map_figure(ds: xr.Dataset, sample: str | int = 0, query: int = 0, *, layers=None) -> Figure:
    """Attention from one question word to the video tokens overlaid on the frames, clean (left) and with cross-frame
    knockout (right), one row per layer, ``log10(attention + 5e-5)`` as in the paper (Fig. 5 / U)."""
    one = ds.sel(sample=sample) if isinstance(sample, str) else ds.isel(sample=sample)
    word = str(one["query_text"].values[query])
    if not word:
        raise MapflowError(f"sample {one['sample'].values} has no query slot {query}")
    layers = list(one["layer"].values if layers is None else layers)
    t, grid_h, grid_w = (int(one["frame"].max()) + 1, int(one["row"].max()) + 1, int(one["col"].max()) + 1)
    maps = np.log10(one["attention"].isel(query=query).values + 5e-5)  # (condition, layer, video_token)
    low, high = np.nanmin(maps), np.nanmax(maps)
    strip = None
    if "frame_pixels" in one:  # the first input frame of each model frame unit (Qwen merges two per unit)
        pixels = one["frame_pixels"].values
        strip = np.concatenate([pixels[i * len(pixels) // t] for i in range(t)], axis=1)
    fig, axes = new_figure(len(layers), 2, width=0.9 * t + 1, height=1.0)
    for col, condition in enumerate(one["condition"].values):
        for row, layer in enumerate(layers):
            ax = axes[row][col]
            grid = np.concatenate(list(maps[col, layer].reshape(t, grid_h, grid_w)), axis=1)
            extent = (0, t * grid_w, grid_h, 0)
            if strip is not None:
                ax.imshow(strip, extent=extent)
            image = ax.imshow(
                grid, vmin=low, vmax=high, cmap="viridis", extent=extent, alpha=0.6 if strip is not None else 1.0
            )
            panel(ax, sample=one["sample"].values, condition=condition, layer=layer + 1, word=word.strip())
            record_cells(
                ax,
                grid,
                rows=range(grid_h),
                cols=[f"frame {f + 1}, col {c}" for f in range(t) for c in range(grid_w)],
                row_name="row",
                col_name="token",
                value_name="log10(attention + 5e-5)",
                vmin=low,
                vmax=high,
                cmap="viridis",
                n=1,
                extent=extent,
                origin="upper",
            )
            for frame in range(1, t):
                ax.axvline(frame * grid_w, color="white", linewidth=0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(f"L{layer + 1}", fontsize="small")
        axes[0][col].set_title(f"{condition}: '{word.strip()}' -> video", fontsize="small")
    fig.colorbar(image, ax=axes[:, 1].tolist(), shrink=0.6, label="log10(attention + 5e-5)")
    return fig


@screen_marked
def verb_anchor_figure(ds: xr.Dataset, *, negative_only: bool = False) -> Figure:
    """Relative change of the anchor verb's probability per layer, one panel per flow, one line per anchor order
    (Fig. S). ``negative_only`` keeps, per flow, the samples whose mean change is <= 0 (the released plotting code's
    undocumented selection)."""
    flows = list(ds["flow"].values)
    fig, axes = new_figure(1, len(flows), width=3.8, sharey=True)
    x = ds["layer"].values + 1
    for ax, flow in zip(axes[0], flows):
        panel(ax, flow=flow)
        for anchor in ds["anchor"].values:
            values = ds["rel_change"].sel(flow=flow, anchor=anchor).transpose("sample", "layer").values
            values = values[np.isfinite(values).any(1)]
            if negative_only:
                values = values[np.nanmean(values, axis=1) <= 0]
            if len(values):
                _band(ax, x, values, f"verb {int(anchor)} (n={len(values)})", series={"anchor": f"verb {int(anchor)}"})
        ax.set_title(str(flow), fontsize="small")
        if not ax.lines:
            ax.text(
                0.5,
                0.5,
                "no sample with enough verb anchors",
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize="small",
            )
        else:
            _finish(ax, "mean rel_change (%)")
    return fig


# ---------------------------------------------------------------------------------------------------------------
# Beyond the paper: finer granularity (studies frame_pairs and head_sweep)


def _heatmap(ax, values: np.ndarray, *, limit: float, xlabel: str, ylabel: str, title: str, xticks, yticks):
    """A diverging heatmap centred on 0 (red: the knockout lowers the probability)."""
    image = ax.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit, origin="lower", aspect="auto")
    ax.set_xticks(range(len(xticks)), [str(t) for t in xticks], fontsize="small")
    ax.set_yticks(range(len(yticks)), [str(t) for t in yticks], fontsize="small")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize="medium")
    return image


def _nanmean_last(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN; NaN where every value is NaN (unmeasured pairs), without a warning."""
    finite = np.isfinite(values)
    count = finite.sum(-1)
    return np.where(count > 0, np.where(finite, values, 0).sum(-1) / np.maximum(count, 1), np.nan)


def _limit(values: np.ndarray) -> float:
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


@screen_marked
def frame_pair_figure(ds: xr.Dataset, *, variable: str = "rel_change", bins: int = 4) -> Figure:
    """Mean % change per (earlier source frame, later target frame), one panel per bin of sweep layers: which frames
    the model compares, and where."""
    mean = ds[variable].mean("sample", skipna=True).transpose("source_frame", "target_frame", "layer").values
    layers = ds["layer"].values
    groups = [g for g in np.array_split(np.arange(len(layers)), min(bins, len(layers))) if len(g)]
    binned = [_nanmean_last(mean[..., g]) for g in groups]
    limit = _limit(np.stack(binned))
    fig, axes = new_figure(1, len(groups), width=3.6, height=3.4)
    frames = ds["source_frame"].values
    per_sample = ds[variable].transpose("sample", "source_frame", "target_frame", "layer").values
    for ax, g, values in zip(axes[0], groups, binned):
        title = f"layers {layers[g[0]] + 1}-{layers[g[-1]] + 1}"
        image = _heatmap(
            ax,
            values,
            limit=limit,
            xlabel="target frame (queries)",
            ylabel="source frame (keys)",
            title=title,
            xticks=frames,
            yticks=frames,
        )
        in_bin = _nanmean_last(per_sample[..., g])  # each sample's mean over the bin's layers
        _, low, high = mean_and_ci(in_bin)
        panel(ax, layers=title.removeprefix("layers "))
        record_cells(
            ax,
            values,
            rows=frames,
            cols=frames,
            row_name="source frame",
            col_name="target frame",
            value_name=f"mean {variable} (%)",
            vmin=-limit,
            vmax=limit,
            cmap="RdBu",
            n=np.isfinite(in_bin).sum(0),
            low=low,
            high=high,
            band="95% bootstrap CI of the samples' bin means (not drawn)",
        )
    fig.colorbar(image, ax=axes[0].tolist(), label=f"mean {variable} (%)", shrink=0.8)
    return fig


def head_window_size(ds: xr.Dataset) -> int | None:
    """The number of layers each head_sweep cell cut (1: one head of one layer); None for a store that does not say."""
    if "window" in ds.coords and ds["window"].size:
        return int(np.asarray(ds["window"].values).ravel()[0])
    label = str(ds.attrs.get("window_label", ""))
    return int(label.partition(":")[2]) if label.startswith("center:") else None


def head_window_text(ds: xr.Dataset) -> str:
    size = head_window_size(ds)
    if size == 1:
        return "one head of one layer per cell (window 1); a head index names a different head in every layer"
    if size is None:
        return "window not recorded; head indices are per layer"
    return (
        f"head h cut in the {size} layers around each layer (window {size}); heads are not aligned across "
        "layers, so a cell mixes different heads"
    )


@screen_marked
def head_figure(ds: xr.Dataset, *, flow: str | None = None, variable: str = "rel_change") -> Figure:
    """Mean % change per (layer, head) for one flow (default: the one with the strongest mean effect); the title says
    how many layers each cell cut and that head indices are per layer."""
    mean = ds[variable].mean("sample", skipna=True)
    if flow is None:
        strength = np.abs(mean).max(["layer", "head"], skipna=True)
        flow = (
            str(strength["flow"].values[int(np.nanargmax(strength.values))])
            if np.isfinite(strength).any()
            else str(ds["flow"].values[0])
        )
    values = mean.sel(flow=flow).transpose("layer", "head").values
    fig, axes = new_figure(1, 1, width=6.0, height=4.4)
    size = head_window_size(ds)
    what = {1: "one head of one layer", None: "one head index (window not recorded)"}.get(
        size, f"one head index, window {size}"
    )
    scope = {1: "window 1: one layer per cell; head indices are per layer", None: "head indices are per layer"}.get(
        size, f"window {size}: {size} layers per cell, the same index in each; heads are not aligned across layers"
    )
    ylabel = "layer (1-based)" if size == 1 else "centre layer (1-based)"
    per_sample = ds[variable].sel(flow=flow).transpose("sample", "layer", "head").values
    _, low, high = mean_and_ci(per_sample)
    panel(axes[0][0], flow=flow, window=size if size is not None else "not recorded")
    record_cells(
        axes[0][0],
        values,
        rows=ds["layer"].values + 1,
        cols=ds["head"].values,
        row_name=ylabel.removesuffix(" (1-based)"),
        col_name="head",
        value_name=f"mean {variable} (%)",
        vmin=-_limit(values),
        vmax=_limit(values),
        cmap="RdBu",
        n=np.isfinite(per_sample).sum(0),
        low=low,
        high=high,
        band="95% bootstrap CI (not drawn)",
    )
    image = _heatmap(
        axes[0][0],
        values,
        limit=_limit(values),
        xlabel="head (index within its layer)",
        ylabel=ylabel,
        title=f"{flow}: knockout in {what}\n{scope}",
        xticks=ds["head"].values,
        yticks=ds["layer"].values + 1,
    )
    fig.colorbar(image, ax=axes[0][0], label=f"mean {variable} (%)")
    return fig

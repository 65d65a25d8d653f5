"""Knockout measurements of one sample (`StudyContext.sweep`, `.knockout`, `.empty_sweep`): the cells run on the
context's backend, here or on a server, and come back as the stored Dataset (`mapflow.analysis.datasets`).

The functions take the `StudyContext` first; studies call them as its methods.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from ..knockout.cells import CellsRequest, prediction_layout
from ..knockout.cells import wants_knockout as cells_wants_knockout
from ..knockout.engine import check_heads
from ..knockout.flows import Flow, Window
from ..knockout.screen import parse_plan
from .clean import CleanRun, accepted_tokens, clean_from_readouts, option_token_ids
from .datasets import knockout_dataset, relative_change, with_window_labels


def wants_knockout(clean: CleanRun, mode: str) -> bool:
    return cells_wants_knockout(clean.correct, mode)


def knockout_sweep(ctx, flows, *, sweep_layers=None, window: Window | None = None, heads=None) -> xr.Dataset:
    """Knock out each flow in the window around each sweep layer; one (flow, layer) cell per forward pass.

    Returns a Dataset with dims ``(flow, layer)``: ``p_knockout`` (probability of the clean run's predicted token),
    ``rel_change`` (%), ``p_gt_knockout`` and ``rel_change_gt`` for the ground-truth answer token, ``pred_knockout``
    (argmax token after knockout), and per-sample scalars ``p_base``, ``p_gt_base``, ``pred_base``, ``answer_token``,
    ``correct`` and ``knocked_out``. Samples the ``samples`` mode skips keep NaN (and -1 tokens) in the cells.
    """
    num_layers = ctx.adapter.num_layers
    sweep = list(range(num_layers) if sweep_layers is None else sweep_layers)
    window = window or ctx.config.window
    layer_sets = [window.layers(layer, num_layers) for layer in sweep]
    ds = measure_knockouts(ctx, flows, layer_sets, dim="layer", labels=np.asarray(sweep, dtype=np.int64), heads=heads)
    return with_window_labels(ds, window)


def knockout_layer_sets(
    ctx, flows, layer_sets: Mapping[str, tuple[int, ...]], *, dim: str = "layers", heads=None
) -> xr.Dataset:
    """Knock out each flow in each named fixed set of layers (e.g. first and second half): dims ``(flow, dim)``,
    labelled by the sets' names."""
    return measure_knockouts(
        ctx, flows, list(layer_sets.values()), dim=dim, labels=np.asarray(list(layer_sets), dtype=object), heads=heads
    )


def measure_knockouts(ctx, flows, layer_sets, *, dim: str, labels, heads=None) -> xr.Dataset:
    """The shared measurement: one forward pass per (flow, layer set), read at the last position. The tensors come
    from `mapflow.knockout.cells.knockout_cells`, on the run's backend (`ctx.backend`: here, or in one request on an
    NDIF server). ``heads`` (default ``--heads``) restricts every flow to those query heads. Under ``--plan screen`` the cells are
    first-order estimates (`mapflow.knockout.screen`); ``screen+verify K`` adds the exact values of the K largest ones."""
    flows = [f if isinstance(f, Flow) else Flow.parse(f) for f in (ctx.config.flows or flows)]
    heads = check_heads(ctx.config.heads if heads is None else heads, ctx.adapter.num_heads)
    request = CellsRequest(
        flows=tuple(flows),
        layer_sets=tuple(tuple(int(i) for i in layers) for layers in layer_sets),
        layout=ctx.layout,
        samples=ctx.config.samples,
        gt_token=ctx.answer_token_id(),
        option_tokens=tuple(option_token_ids(ctx).items()) if ctx.prompt.option_letters else (),
        true_letter=ctx.prompt.true_letter,
        plan=ctx.config.plan,
        heads=heads,
        screen_metric=ctx.config.option("screen_metric", "logodds"),
        accepted_tokens=accepted_tokens(ctx),
    )
    cells = ctx.backend.run_cells(ctx.adapter, ctx.prepared, request)
    clean = clean_from_readouts(ctx, cells["clean"])  # what `clean_run` reads, computed where the logits are
    shape = (len(flows), len(layer_sets))
    p_new = np.full(shape, np.nan)
    p_gt_new = np.full(shape, np.nan)
    pred_new = np.full(shape, -1, dtype=np.int64)
    run_it = wants_knockout(clean, ctx.config.samples)
    runnable = cells["runnable"].tolist()
    if run_it and "p" in cells:
        p_new[runnable] = cells["p"].numpy()
        p_gt_new[runnable] = cells["p_gt"].numpy()
        pred_new[runnable] = cells["pred"].numpy()
    ds = knockout_dataset(
        flows, layer_sets, dim, labels, p_new, p_gt_new, pred_new, clean, run_it, accepted=request.accepted_tokens
    )
    return with_screen_results(ds, ctx, cells, runnable, shape, dim, clean)


def with_screen_results(ds: xr.Dataset, ctx, cells, runnable, shape, dim, clean) -> xr.Dataset:
    """A screen run's provenance attributes and, under ``screen+verify K``, the verified cells' exact values."""
    method, verify = parse_plan(ctx.config.plan)
    if method == "auto" or method == "naive":
        return ds
    ds.attrs.update(method="screen", screen_metric=ctx.config.option("screen_metric", "logodds"))
    if verify:
        exact, exact_gt = np.full(shape, np.nan), np.full(shape, np.nan)
        if "p_exact" in cells:
            exact[runnable], exact_gt[runnable] = cells["p_exact"].numpy(), cells["p_gt_exact"].numpy()
        ds["p_knockout_exact"] = (("flow", dim), exact)
        ds["rel_change_exact"] = (("flow", dim), relative_change(exact, clean.p_base))
        ds["rel_change_gt_exact"] = (
            ("flow", dim),
            relative_change(exact_gt, clean.p_gt_base) if clean.p_gt_base > 0 else np.full(shape, np.nan),
        )
    return ds


def unmeasured_sweep(ctx, flows) -> xr.Dataset:
    """The NaN result of `knockout_sweep` for an input that cannot be measured (same dims and coordinates)."""
    num_layers = ctx.adapter.num_layers
    window = ctx.config.window
    flows = [f if isinstance(f, Flow) else Flow.parse(f) for f in (ctx.config.flows or flows)]
    layer_sets = [window.layers(layer, num_layers) for layer in range(num_layers)]
    shape = (len(flows), num_layers)
    ds = knockout_dataset(
        flows,
        layer_sets,
        "layer",
        np.arange(num_layers, dtype=np.int64),
        np.full(shape, np.nan),
        np.full(shape, np.nan),
        np.full(shape, -1, dtype=np.int64),
        None,
        False,
    )
    return with_window_labels(ds, window)


def layout_with_prediction(ctx, clean: CleanRun):
    """The layout plus a ``predicted_option`` span when the clean run picked a false option (failure analysis)."""
    if not ctx.prompt.option_letters:
        return ctx.layout
    return prediction_layout(ctx.layout, clean.pred, option_token_ids(ctx).items(), ctx.prompt.true_letter)

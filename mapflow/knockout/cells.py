"""The knockout cells of one sample as plain tensors: clean pass, every (flow, layer set) configuration, readouts.

This is the compute half of `ctx.sweep` and `ctx.knockout` (`mapflow.analysis.knockouts`, which builds the stored
Dataset from what it returns). It imports only torch, numpy and mapflow's own layout, flow, engine and screen code, all at module level,
so the same function runs wherever the run's backend (`mapflow.backends`) sends it: in this process
(`LocalBackend`), or shipped as source in one request per sample to an NDIF server (`NDIFBackend`, through
`mapflow.remote.client.RemoteModel.run_cells`), where the fast engine's reuse state (vision once, shared clean
prefix, rows joining at their first knocked-out layer, packs) never leaves the server: only the last-position clean
logits and the per-cell readouts come back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..inputs.layout import TokenLayout
from .engine import KnockoutConfig, clean_readout, clean_state, run_knockouts, run_layer_masks, run_naive
from .flows import Flow
from .screen import parse_plan, probability_after, screen_cells, screen_forward

PREDICTED_OPTION = "predicted_option"
SAMPLE_MODES = ("correct", "all", "wrong")


@dataclass(frozen=True)
class CellsRequest:
    """Everything the cells of one sample depend on besides the model and its prepared input (all plain data)."""

    flows: tuple[Flow, ...]
    layer_sets: tuple[tuple[int, ...], ...]
    layout: TokenLayout
    samples: str  # which clean outcomes get knocked out: correct | all | wrong
    gt_token: int
    option_tokens: tuple[tuple[str, int], ...]  # (letter, its answer token), in prompt order
    true_letter: str | None
    plan: str = "auto"  # or "screen" / "screen+verify K" (mapflow.knockout.screen)
    heads: tuple[int, ...] | None = None  # cut every flow in these query heads only
    screen_metric: str = "logodds"
    # the token ids the run's correctness rule counts as the right answer (`mapflow.analysis.context.accepted_tokens`):
    # the sample filter runs where the logits are, so the rule travels as ids; empty: ``gt_token`` alone
    accepted_tokens: tuple[int, ...] = ()

    def is_correct(self, token: int) -> bool:
        return token in self.accepted_tokens if self.accepted_tokens else token == self.gt_token


def wants_knockout(correct: bool, mode: str) -> bool:
    return mode == "all" or (mode == "correct") == correct


def prediction_layout(layout: TokenLayout, pred: int, option_tokens, true_letter) -> TokenLayout:
    """The layout plus a ``predicted_option`` span when the clean run picked a false option (failure analysis)."""
    letter = next((letter for letter, token in option_tokens if token == pred), None)
    if letter is None or letter == true_letter or f"option_{letter}" not in layout.spans:
        return layout
    return layout.with_spans(**{PREDICTED_OPTION: layout.positions(f"option_{letter}")})


def knockout_cells(adapter, prepared, request: CellsRequest) -> dict[str, torch.Tensor]:
    """``clean`` (3,) float64: the clean run's predicted token, its probability and the answer token's probability
    (last position); ``runnable`` (R,) indices of the flows measured; ``p``, ``p_gt`` (R, S) float32 probabilities of
    the clean prediction and of the answer token, ``pred`` (R, S) argmax tokens. A few KiB whatever the vocabulary."""
    # module-level imports only: on an NDIF server this function runs without its module (no relative imports)
    method, verify = parse_plan(request.plan)
    screen = None
    if method in ("screen", "screen+verify"):
        screen = screen_forward(adapter, prepared)
        state, logits = None, screen.logits
    else:
        state = clean_state(adapter, prepared) if method == "auto" else None
        logits = run_naive(adapter, prepared) if state is None else state.logits[-1]
    clean_probs = logits.float().softmax(-1)
    pred = int(clean_probs.argmax())
    clean = [pred, float(clean_probs[pred]), float(clean_probs[request.gt_token])]
    cells = {"clean": torch.tensor(clean, dtype=torch.float64), "runnable": torch.zeros(0, dtype=torch.long)}
    if not wants_knockout(request.is_correct(pred), request.samples):
        return cells
    layout = prediction_layout(request.layout, pred, request.option_tokens, request.true_letter)
    # a flow into the predicted false option exists only on samples answered with a false option
    runnable = [
        i
        for i, flow in enumerate(request.flows)
        if all(PREDICTED_OPTION not in (b.source, b.target) or PREDICTED_OPTION in layout.spans for b in flow.blocks)
    ]
    blocked = [torch.from_numpy(request.flows[i].block_matrix(layout)) for i in runnable]
    configs = [KnockoutConfig(b, tuple(layers), request.heads) for b in blocked for layers in request.layer_sets]
    cells["runnable"] = torch.tensor(runnable, dtype=torch.long)
    if configs and screen is not None:
        cells.update(screen_estimates(screen, [(b, request.heads) for b in blocked], request, pred))
        if verify:
            cells.update(verify_cells(adapter, prepared, configs, cells["p"], clean[1], pred, request.gt_token, verify))
    elif configs:
        probs = run_knockouts(adapter, prepared, configs, plan=method, clean=state).softmax(-1)
        probs = probs.view(len(runnable), len(request.layer_sets), -1)
        # clones: a view would carry its whole (R, S, V) storage into the result
        cells.update(p=probs[..., pred].clone(), p_gt=probs[..., request.gt_token].clone(), pred=probs.argmax(-1))
    return cells


def screen_estimates(screen, patterns, request: CellsRequest, pred: int) -> dict[str, torch.Tensor]:
    """The screen's first-order ``p``/``p_gt`` of every cell (`mapflow.knockout.screen`); ``pred`` unknown (-1)."""
    metric = request.screen_metric
    estimate = screen_cells(
        screen, screen.gradients([pred, request.gt_token], metric), patterns, request.layer_sets
    ).numpy()
    p = torch.from_numpy(probability_after(screen.logits, pred, estimate[..., 0], metric))
    p_gt = torch.from_numpy(probability_after(screen.logits, request.gt_token, estimate[..., 1], metric))
    return {"p": p, "p_gt": p_gt, "pred": torch.full(p.shape, -1, dtype=torch.long)}


def verify_cells(
    adapter, prepared, configs, p_screen: torch.Tensor, p_base: float, pred: int, gt_token: int, count: int
) -> dict[str, torch.Tensor]:
    """Exact ``p_exact``/``p_gt_exact`` of the ``count`` cells whose estimate moves the answer probability most; NaN
    elsewhere."""
    chosen = torch.argsort(-(p_screen - p_base).abs().flatten(), stable=True)[:count]
    probs = run_knockouts(adapter, prepared, [configs[int(i)] for i in chosen]).softmax(-1).double()
    p, p_gt = (torch.full((p_screen.numel(),), float("nan"), dtype=torch.float64) for _ in range(2))
    p[chosen], p_gt[chosen] = probs[:, pred], probs[:, gt_token]
    return {"p_exact": p.view(p_screen.shape), "p_gt_exact": p_gt.view(p_screen.shape)}


def knockout_cells_batch(adapter, items) -> list:
    """`knockout_cells` of several ``(prepared, request)`` samples in one server request: the i-th entry is the i-th
    sample's cells, or the text of the error its computation raised, so a failing sample fails alone."""
    out = []
    for prepared, request in items:
        try:
            out.append(knockout_cells(adapter, prepared, request))
        except Exception as err:  # noqa: BLE001 - reported for this sample only, the others' cells still return
            out.append(f"{type(err).__name__}: {err}")
    return out


def pack_layer_masks(masks: list[np.ndarray]) -> np.ndarray:
    """Per-layer (L, L) blocked-edge matrices -> (layers, L, ceil(L / 8)) uint8 bits along the key axis: what a
    request carries (8x smaller than bools; a 7B prompt's 32 layers are ~7 MB instead of ~54 MB)."""
    return np.packbits(np.stack(masks).astype(bool), axis=-1)


def unpack_layer_masks(bits: np.ndarray) -> dict[int, torch.Tensor]:
    """`pack_layer_masks`' inverse, as `run_layer_masks` takes it (layer -> (L, L) bool)."""
    size = bits.shape[1]
    return {i: torch.from_numpy(m) for i, m in enumerate(np.unpackbits(bits, axis=-1, count=size).astype(bool))}


def layer_mask_readouts(
    adapter, prepared, conditions: tuple[np.ndarray, ...], gt_token: int
) -> dict[str, torch.Tensor]:
    """The clean run and one forward per condition (each `pack_layer_masks` bits: layer i cuts its own edges, the
    effective-pathway masks), read at the last position: ``clean`` (3,) float64 as in `knockout_cells`; ``pred`` (C,)
    argmax tokens and ``p_gt`` (C,) float64 answer-token probabilities. One request on a server (the sample plan)."""
    out = {"clean": clean_readout(adapter, prepared, gt_token)}
    preds, p_gt = [], []
    for bits in conditions:
        probs = run_layer_masks(adapter, prepared, unpack_layer_masks(bits)).softmax(-1)
        preds.append(int(probs.argmax()))
        p_gt.append(float(probs[gt_token]))
    out.update(pred=torch.tensor(preds, dtype=torch.long), p_gt=torch.tensor(p_gt, dtype=torch.float64))
    return out

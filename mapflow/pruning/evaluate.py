"""prune-eval: the pathway plan against no pruning and FastV-style pruning, per sample, in one store.

Per sample and method (`prune_eval`, ``mapflow prune-eval``): the pruned prefill (`mapflow.pruning.forward`) gives the
last prompt position's logits; they are scored as mapflow's clean run scores a sample (`mapflow.analysis.clean`: the
argmax over the vocabulary is correct when it is one of the run's accepted tokens, the text rule by default), and
compared with the unpruned prediction (``agrees``). FLOPs: `mapflow.pruning.flops.prefill_flops` (the language model's
prefill; the vision encoder costs the same for every method). Wall time: one timed pruned prefill per method.

Methods: ``unpruned``; ``pathway`` (the plan's `PruneSpec`; with frame-local layers also ``pathway_drop_only``, the
same drop without them); ``fastv_K{K}_R{R}``: FastV-style, the R share of the video tokens that received the least
attention in layer K leaves after layer K, for every K and R of the sweep. The default sweep brackets the plan's
FLOPs: K in {2 (FastV's), L//2, L-1, L} below the last layer, R in {25, 50, 75, 90, 100} % and, for each K < L, the R
that keeps as many video-token-layers as the plan (so the curves pass through the plan's FLOPs); K = L with R = 100 %
is the plan itself and is left out.

The store (mapflow's `ResultStore`, resumable, with provenance): dims ``(sample, pruning)``; ``pred``, ``correct``,
``agrees``, ``p_answer``, ``flops``, ``wall_s``, ``tokens_after`` per (sample, pruning); ``seq_len``, ``video_tokens``
per sample; coords ``task`` (sample), ``kind``, ``K``, ``R``, ``label``, ``spec`` (pruning). The dim is ``pruning``, not
``method``: ``DataArray.sel(method=...)`` is xarray's own keyword (inexact matching) and would silently select nothing.
The plan and the methods are in ``provenance["config"]["prune"]``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import MapflowError
from .plan import PrunePlan
from .spec import PruneSpec

STUDY_NAME = "prune_eval"  # the study name its stores carry (the report finds them by it)
DEFAULT_FASTV_RATIOS = (0.25, 0.5, 0.75, 0.9, 1.0)
FASTV_PAPER_K = 2  # FastV's own setting (K=2, R=50 %)
FLOPS_SCOPE = (
    "language-model prefill (decoder layers + final norm + LM head at the last position); vision encoder excluded"
)


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # unpruned / pathway / pathway_drop_only / fastv
    spec: PruneSpec


def default_fastv_layers(drop_after: int, num_layers: int) -> tuple[int, ...]:
    wanted = {FASTV_PAPER_K, drop_after // 2, drop_after - 1, drop_after}
    return tuple(sorted(k for k in wanted if 0 <= k <= num_layers - 2))


def matched_ratio(k: int, drop_after: int, num_layers: int) -> float:
    """The share R FastV drops after layer K to keep as many video-token-layers as dropping every video token after
    layer L: (K+1) + (1-R)(N-1-K) = L+1."""
    return 1.0 - (drop_after - k) / (num_layers - 1 - k)


def build_methods(plan: PrunePlan, num_layers: int, *, fastv_layers=None, fastv_ratios=None) -> list[Method]:
    """The methods of a run (module doc), checked against the model's ``num_layers``."""
    spec = plan.spec
    if spec.drop_after is None or spec.drop_after > num_layers - 1:
        raise MapflowError(
            f"the plan drops the video after layer {spec.drop_after}, but the model has layers 0..{num_layers - 1}"
        )
    if plan.measured_layers is not None and plan.measured_layers != num_layers:
        raise MapflowError(
            f"the plan was derived from a map of {plan.measured_layers} layers; this model has {num_layers}: "
            "derive the plan from this model's stores (or give --drop-video-after)"
        )
    last = spec.drop_after
    methods = [Method("unpruned", "unpruned", PruneSpec()), Method("pathway", "pathway", spec)]
    if spec.frame_local_layers:
        methods.append(Method("pathway_drop_only", "pathway_drop_only", PruneSpec(drop_after=last, drop="video")))
    ks = default_fastv_layers(last, num_layers) if fastv_layers is None else tuple(int(k) for k in fastv_layers)
    for k in ks:
        if not 0 <= k <= num_layers - 2:
            raise MapflowError(
                f"FastV layer K={k}: choose 0..{num_layers - 2} (dropping after the last layer drops nothing)"
            )
        ratios = set(DEFAULT_FASTV_RATIOS if fastv_ratios is None else (float(r) for r in fastv_ratios))
        if fastv_ratios is None and k < last:
            ratios.add(round(matched_ratio(k, last, num_layers), 3))
        for r in sorted(ratios):
            if not 0 < r <= 1:
                raise MapflowError(f"FastV ratio R={r}: give a share in (0, 1]")
            if fastv_ratios is None and k == last and r == 1.0:
                continue  # every video token after L: the plan itself
            methods.append(
                Method(
                    f"fastv_K{k}_R{round(100 * r):g}", "fastv", PruneSpec(drop_after=k, drop="least_attended", ratio=r)
                )
            )
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise MapflowError(f"two FastV settings share a name (ratios closer than 1 %): {names}")
    return methods


def method_coords(methods: list[Method]) -> dict:
    return {
        "pruning": [m.name for m in methods],
        "kind": ("pruning", np.asarray([m.kind for m in methods], dtype=object)),
        "K": ("pruning", np.asarray([-1 if m.spec.drop_after is None else m.spec.drop_after for m in methods])),
        "R": (
            "pruning",
            np.asarray(
                [
                    0.0 if not m.spec.drops_anything else (1.0 if m.spec.drop == "video" else m.spec.ratio)
                    for m in methods
                ]
            ),
        ),
        "label": ("pruning", np.asarray([m.spec.label() for m in methods], dtype=object)),
        "spec": ("pruning", np.asarray([json.dumps(m.spec.to_dict(), sort_keys=True) for m in methods], dtype=object)),
    }


def evaluate_sample(ctx, methods: list[Method]) -> xr.Dataset:
    """Every method on one sample (``ctx``: `mapflow.analysis.context.StudyContext`)."""
    import torch

    from .flops import prefill_flops
    from .forward import pruned_prefill

    accepted = np.asarray(ctx.accepted_tokens(), dtype=np.int64)
    answer = ctx.answer_token_id()
    preds, p_answer, flops, wall, kept = [], [], [], [], []
    for method in methods:
        with torch.no_grad():
            started = time.perf_counter()
            out = pruned_prefill(ctx.adapter, ctx.prepared, method.spec)
            wall.append(time.perf_counter() - started)
        probs = out.logits.float().softmax(-1)
        preds.append(int(probs.argmax()))
        p_answer.append(float(probs[answer]))
        flops.append(int(prefill_flops(ctx.adapter, ctx.prepared, method.spec).total))
        kept.append(int(len(out.kept)))
    preds = np.asarray(preds, dtype=np.int64)
    cell = ("pruning",)
    return xr.Dataset(
        {
            "pred": (cell, preds),
            "correct": (cell, np.isin(preds, accepted)),
            "agrees": (cell, preds == preds[0]),  # methods[0] is the unpruned model
            "p_answer": (cell, np.asarray(p_answer)),
            "flops": (cell, np.asarray(flops, dtype=np.int64)),
            "wall_s": (cell, np.asarray(wall)),
            "tokens_after": (cell, np.asarray(kept, dtype=np.int64)),
            "seq_len": ((), np.int64(ctx.layout.seq_len)),
            "video_tokens": ((), np.int64(len(ctx.layout.positions("video")))),
        },
        coords=method_coords(methods),
    )


def _study_function(methods: list[Method]):
    """The per-sample function the runner maps over the samples, named as the store's study."""
    warmed = []

    def prune_eval(ctx):
        if not warmed:  # the first forward pays one-off costs (allocations, kernels): not a method's time
            from .forward import pruned_prefill

            pruned_prefill(ctx.adapter, ctx.prepared, PruneSpec())
            warmed.append(True)
        return evaluate_sample(ctx, methods)

    return prune_eval


def prune_eval(
    plan,
    model=None,
    data=None,
    *,
    out=None,
    benchmark: str | None = None,
    limit: int | None = None,
    tasks=None,
    fastv_layers=None,
    fastv_ratios=None,
    seed: int = 42,
    threads: int | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    progress: bool = True,
    resume: bool = True,
    overwrite: bool = False,
) -> xr.Dataset:
    """Evaluate ``plan`` (a `PrunePlan`, its dict or a plan.json path) on ``model`` and ``data`` (as `mapflow.run`:
    None = the embedded organism / benchmark) against no pruning and the FastV sweep (module doc); the results go to
    the store ``out`` (resumed if it exists; None: kept in memory) and are returned as a Dataset."""
    import tempfile

    from ..analysis.resolve import prepare_run
    from ..analysis.runner import run_study
    from ..results.store import open_dataset

    plan = as_plan(plan)
    function = _study_function([])  # replaced below, once the model's depth is known
    settings = {"benchmark": benchmark, "limit": limit, "tasks": tasks, "seed": seed, "threads": threads}
    settings["device"] = device
    if dtype is not None:
        settings["dtype"] = dtype
    prepared = prepare_run(function, model, data, **settings)
    methods = build_methods(plan, prepared.adapter.num_layers, fastv_layers=fastv_layers, fastv_ratios=fastv_ratios)
    study = type(prepared.study)(_study_function(methods))
    provenance = dict(prepared.provenance)
    provenance["config"] = {
        **provenance["config"],
        "prune": {
            "plan": plan.to_dict(),
            "methods": {m.name: {"kind": m.kind, **m.spec.to_dict()} for m in methods},
            "flops": FLOPS_SCOPE,
            "scoring": "argmax over the vocabulary at the last prompt position, correct by the run's correctness rule",
        },
    }
    with tempfile.TemporaryDirectory(prefix="mapflow-prune-") as scratch:
        store = Path(out) if out is not None else Path(scratch) / f"{STUDY_NAME}.zarr"
        summary = run_study(
            study,
            prepared.adapter,
            prepared.samples,
            store,
            config=prepared.config,
            provenance=provenance,
            resume=resume,
            overwrite=overwrite,
            progress=progress,
            bad_entries=getattr(prepared.samples, "bad_entries", ()),
        )
        if not summary.done and not summary.skipped:
            raise MapflowError(f"prune-eval measured no sample: {summary.describe()}")
        ds = open_dataset(store)
        return ds.load() if out is None else ds  # without a store the results stay in memory


def as_plan(plan) -> PrunePlan:
    if isinstance(plan, PrunePlan):
        return plan
    if isinstance(plan, PruneSpec):
        return PrunePlan(plan, "explicit", None, None)
    if isinstance(plan, dict):
        return PrunePlan.from_dict(plan)
    if isinstance(plan, (str, Path)):
        return PrunePlan.load(plan)
    raise MapflowError(
        f"a plan is a PrunePlan, a PruneSpec, a plan dict or a plan.json path, not {type(plan).__name__}"
    )

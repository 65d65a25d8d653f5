"""The one analysis core: clean run, knockout sweeps and their measurements, for any adapter.

Every measurement is an nnsight trace over the prepared input. Probabilities are read at the last input position
(the one that predicts the answer letter) in float32.
"""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch
import xarray as xr

from ..backends import Backend, LocalBackend
from ..data.sample import Sample
from ..differences import default
from ..knockout.flows import Flow, Window
from ..knockout.cells import PREDICTED_OPTION, SAMPLE_MODES, CellsRequest, knockout_cells, prediction_layout
from ..knockout.cells import wants_knockout as cells_wants_knockout
from ..knockout.engine import PLANS, check_heads, run_naive
from ..models.base import PreparedInput, VideoLLMAdapter
from ..inputs.prompts import BuiltPrompt
from ..knockout.screen import parse_plan



@dataclass(frozen=True)
class StudyConfig:
    """What a study run measures. Saved in the results' provenance, and compared on resume."""

    window: Window = field(default_factory=Window)
    samples: str = "correct"
    num_frames: int = 8
    frame_rule: str = "segment_midpoint"
    prompt_template: str | None = None  # None: the checkpoint's own, else the benchmark's (`mapflow.study.resolve`)
    gt_token: str = default("gt_token")  # or "vocab": the released code's bare-letter vocabulary lookup
    non_option_includes_prefix: bool = True
    flows: tuple[str, ...] | None = None  # None: the study's own flows
    plan: str = "auto"  # "naive": one full forward per configuration, vision included (the paper code's cost)
    # study-specific settings (``--option key=value``), documented in each study's module; values are strings
    options: dict = field(default_factory=dict)
    seed: int = 42  # for a study's own random choices (e.g. the random-blocking control), derived per sample
    heads: tuple[int, ...] | None = None  # cut every flow in these query heads only (``--heads``); None: all heads

    def option(self, name: str, default: str | None = None) -> str | None:
        return self.options.get(name, default)

    def __post_init__(self):
        if self.samples not in SAMPLE_MODES:
            raise ValueError(f"samples must be one of {SAMPLE_MODES}, got '{self.samples}'")
        if self.gt_token not in ("continuation", "vocab"):
            raise ValueError(f"gt_token must be 'continuation' or 'vocab', got '{self.gt_token}'")
        if self.plan not in PLANS:
            parse_plan(self.plan)  # the screen's plans, or an error naming the valid ones

    @property
    def method(self) -> str:
        """``exact`` or ``screen`` (first-order estimates, `mapflow.knockout.screen`)."""
        return "exact" if self.plan in PLANS else "screen"

    def to_dict(self) -> dict:
        return {"window_style": self.window.style, "window": self.window.size,
                "window_ranges": [list(r) for r in self.window.ranges], "samples": self.samples,
                "num_frames": self.num_frames, "frame_rule": self.frame_rule,
                "prompt_template": self.prompt_template, "gt_token": self.gt_token,
                "non_option_includes_prefix": self.non_option_includes_prefix,
                "flows": None if self.flows is None else list(self.flows),
                "options": dict(sorted(self.options.items())), "seed": self.seed,
                **({"heads": list(self.heads)} if self.heads is not None else {}),
                **({"method": "screen", "plan": self.plan} if self.method == "screen" else {})}
        # an exact `plan` is left out on purpose: every exact plan gives the same numbers, so a run may resume under
        # another; the screen's estimates are not the same numbers, so they are named


CORRECTNESS_RULES = ("text", "token")


@dataclass
class CleanRun:
    """The unmodified forward pass at the last position.

    Two correctness rules: ``correct_text`` is the released code's (the predicted token decoded on its own equals the
    answer letter, or the answer's first token decoded, ignoring case), so a predicted ``▁A`` or ``a`` counts;
    ``correct_token`` compares token ids. ``correct`` follows ``rule`` (``--option correct_by=text|token``, default
    ``text``); stores keep all three so `mapflow.results.metrics.correctness_disagreements` can count where they differ.
    """

    logits: torch.Tensor | None  # None where only the readouts travelled (a remote sample request)
    pred: int
    p_base: float
    gt_token: int
    p_gt_base: float
    correct_text: bool | None = None
    rule: str = "text"

    @property
    def correct_token(self) -> bool:
        return self.pred == self.gt_token

    @property
    def correct(self) -> bool:
        if self.rule == "token" or self.correct_text is None:
            return self.correct_token
        return self.correct_text

    def correctness(self) -> dict:
        """The stored correctness variables (per-sample scalars)."""
        return {"correct": ((), self.correct), "correct_token": ((), self.correct_token),
                "correct_text": ((), bool(self.correct if self.correct_text is None else self.correct_text))}


@dataclass
class StudyContext:
    """Everything a study needs for one sample. Studies read the model only through ``adapter``'s envoys."""

    adapter: VideoLLMAdapter
    sample: Sample
    prepared: PreparedInput
    config: StudyConfig
    prompt: BuiltPrompt
    frames: np.ndarray | None = None  # the decoded frames (T, H, W, 3) uint8 the input was built from
    timestamps: np.ndarray | None = None  # each frame's time in seconds, as given to `adapter.prepare` (None: unknown)
    answer_token: int | None = None  # overrides the prompt's answer (e.g. a token inside the model's own response)
    backend: Backend = field(default_factory=LocalBackend)  # where the sample's measurements run

    def rng(self, salt: str = "") -> np.random.Generator:
        """A generator seeded from the run's seed, the sample and ``salt``: the same draw on every rerun/resume."""
        digest = hashlib.sha256(f"{self.config.seed}|{self.sample.sample_id}|{salt}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    @property
    def layout(self):
        return self.prepared.layout

    def trace(self, **kwargs):
        return self.adapter.trace(self.prepared, **kwargs)

    def answer_token_id(self) -> int:
        """The ground-truth token: the first token of the answer as it would follow the prompt."""
        if self.answer_token is not None:
            return self.answer_token
        if self.config.gt_token == "vocab":
            return int(self.adapter.tokenizer.convert_tokens_to_ids(self.prompt.answer_text))
        return self.adapter.continuation_token_id(self.prompt.answer_prompt, self.prompt.answer_text)


def clean_run(ctx: StudyContext, logits: torch.Tensor | None = None) -> CleanRun:
    """The clean prediction at the last position (from ``logits`` when a clean pass already produced them)."""
    logits = run_naive(ctx.adapter, ctx.prepared) if logits is None else logits
    probs = logits.softmax(-1)
    pred = int(probs.argmax())
    gt = ctx.answer_token_id()
    return _clean(ctx, logits, pred, float(probs[pred]), float(probs[gt]))


def _clean(ctx: StudyContext, logits, pred: int, p_base: float, p_gt_base: float) -> CleanRun:
    gt = ctx.answer_token_id()
    return CleanRun(logits=logits, pred=pred, p_base=p_base, gt_token=gt, p_gt_base=p_gt_base,
                    correct_text=text_correct(ctx, pred, gt), rule=correctness_rule(ctx))


def correctness_rule(ctx: StudyContext) -> str:
    """``--option correct_by``: ``text`` (default) or ``token``."""
    rule = ctx.config.option("correct_by", default("correct_by"))
    if rule not in CORRECTNESS_RULES:
        raise ValueError(f"--option correct_by={rule}: choose one of {', '.join(CORRECTNESS_RULES)}")
    return rule


def sample_measurement(ctx: StudyContext, function, *args):
    """``function(adapter, prepared, *args)``: here, or for a remote adapter in one request for the whole sample
    (`mapflow.remote.client.RemoteModel.run_sample`). ``function`` must live at module level in a server-safe module
    (e.g. `mapflow.knockout.cells`) and return plain tensors."""
    return ctx.backend.measure_sample(function, ctx.adapter, ctx.prepared, *args)


def clean_from_readouts(ctx: StudyContext, readout: torch.Tensor) -> CleanRun:
    """A `CleanRun` from the (pred, p_pred, p_answer) triple a server-side measurement returns instead of logits."""
    pred, p_base, p_gt_base = readout.tolist()
    return _clean(ctx, None, int(pred), p_base, p_gt_base)


def text_correct(ctx: StudyContext, pred: int, gt: int) -> bool:
    """The released code's rule: ``decode([pred]).lower() == answer.lower()``, the answer being the true option's
    letter for multiple choice, else the ground-truth token decoded (open-ended answers, verb anchors)."""
    return pred in text_rule_tokens(ctx.adapter.tokenizer, expected_answer_text(ctx, gt))


def expected_answer_text(ctx: StudyContext, gt: int) -> str:
    letter = ctx.prompt.true_letter if ctx.answer_token is None else None
    return letter if letter else ctx.adapter.tokenizer.decode([gt])


_TEXT_RULE_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def text_rule_tokens(tokenizer, expected: str) -> frozenset[int]:
    """Every token id whose piece, decoded on its own, equals ``expected`` ignoring case (e.g. ``A``, ``▁A``, ``a`` on
    a SentencePiece vocabulary). The whole vocabulary is decoded once per tokenizer (about a second for 151k pieces) so
    the rule can travel to a server as ids and be applied where the logits are."""
    pieces = _TEXT_RULE_CACHE.get(tokenizer)
    if pieces is None:
        pieces = [piece.lower() for piece in tokenizer.batch_decode([[i] for i in range(len(tokenizer))])]
        _TEXT_RULE_CACHE[tokenizer] = pieces
    expected = expected.lower()
    return frozenset(i for i, piece in enumerate(pieces) if piece == expected)


def accepted_tokens(ctx: StudyContext) -> tuple[int, ...]:
    """The token ids the run's correctness rule counts as the right answer (``correct_by=token``: the answer's id)."""
    gt = ctx.answer_token_id()
    if correctness_rule(ctx) == "token":
        return (gt,)
    return tuple(sorted(text_rule_tokens(ctx.adapter.tokenizer, expected_answer_text(ctx, gt))))


def wants_knockout(clean: CleanRun, mode: str) -> bool:
    return cells_wants_knockout(clean.correct, mode)


def knockout_sweep(ctx: StudyContext, flows, *, sweep_layers=None, window: Window | None = None,
                   heads=None) -> xr.Dataset:
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


def knockout_layer_sets(ctx: StudyContext, flows, layer_sets: dict[str, tuple[int, ...]]) -> xr.Dataset:
    """Knock out each flow in each named fixed set of layers (e.g. first and second half): dims ``(flow, layers)``."""
    return measure_knockouts(ctx, flows, list(layer_sets.values()), dim="layers",
                             labels=np.asarray(list(layer_sets), dtype=object))


def measure_knockouts(ctx: StudyContext, flows, layer_sets, *, dim: str, labels, heads=None) -> xr.Dataset:
    """The shared measurement: one forward pass per (flow, layer set), read at the last position. The tensors come
    from `mapflow.knockout.cells.knockout_cells`, here or, for a remote adapter, in one request on the server. ``heads``
    (default ``--heads``) restricts every flow to those query heads. Under ``--plan screen`` the cells are
    first-order estimates (`mapflow.knockout.screen`); ``screen+verify K`` adds the exact values of the K largest ones."""
    flows = [f if isinstance(f, Flow) else Flow.parse(f) for f in (ctx.config.flows or flows)]
    heads = check_heads(ctx.config.heads if heads is None else heads, ctx.adapter.num_heads)
    request = CellsRequest(
        flows=tuple(flows), layer_sets=tuple(tuple(int(i) for i in layers) for layers in layer_sets),
        layout=ctx.layout, samples=ctx.config.samples, gt_token=ctx.answer_token_id(),
        option_tokens=tuple(option_token_ids(ctx).items()) if ctx.prompt.option_letters else (),
        true_letter=ctx.prompt.true_letter, plan=ctx.config.plan, heads=heads,
        screen_metric=ctx.config.option("screen_metric", "logodds"), accepted_tokens=accepted_tokens(ctx))
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
    ds = knockout_dataset(flows, layer_sets, dim, labels, p_new, p_gt_new, pred_new, clean, run_it,
                          accepted=request.accepted_tokens)
    return with_screen_results(ds, ctx, cells, runnable, shape, dim, clean)


def with_screen_results(ds: xr.Dataset, ctx: StudyContext, cells, runnable, shape, dim, clean) -> xr.Dataset:
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
        ds["rel_change_gt_exact"] = (("flow", dim), relative_change(exact_gt, clean.p_gt_base)
                                     if clean.p_gt_base > 0 else np.full(shape, np.nan))
    return ds


def knockout_dataset(flows, layer_sets, dim, labels, p_new, p_gt_new, pred_new, clean: CleanRun | None,
                     run_it: bool, accepted=()) -> xr.Dataset:
    """The stored form of a knockout measurement; ``clean=None`` gives the all-NaN cells of an unmeasured input.
    ``correct_knockout``: the knocked-out prediction passes the run's correctness rule (``accepted`` ids), False in
    cells that were not measured (``pred_knockout`` -1)."""
    cell = ("flow", dim)
    blocked_layers = [",".join(str(i) for i in layers) for layers in layer_sets]
    p_base = np.nan if clean is None else clean.p_base
    p_gt_base = np.nan if clean is None else clean.p_gt_base
    return xr.Dataset(
        data_vars={
            "p_knockout": (cell, p_new),
            "rel_change": (cell, relative_change(p_new, p_base)),
            "p_gt_knockout": (cell, p_gt_new),
            "rel_change_gt": (cell, relative_change(p_gt_new, p_gt_base) if p_gt_base > 0
                              else np.full_like(p_gt_new, np.nan)),
            "pred_knockout": (cell, pred_new),
            "correct_knockout": (cell, np.isin(pred_new, np.asarray(accepted, dtype=np.int64)) & (pred_new >= 0)),
            "p_base": ((), p_base),
            "p_gt_base": ((), p_gt_base),
            "pred_base": ((), np.int64(-1 if clean is None else clean.pred)),
            "answer_token": ((), np.int64(-1 if clean is None else clean.gt_token)),
            **(clean.correctness() if clean is not None else
               {name: ((), False) for name in ("correct", "correct_token", "correct_text")}),
            "knocked_out": ((), run_it),
        },
        coords={
            "flow": [f.label for f in flows],
            dim: labels,
            "blocked_layers": (dim, np.asarray(blocked_layers, dtype=object)),
        },
    )


def stack_results(results: list[xr.Dataset], dim: str, labels) -> xr.Dataset:
    """Several measurements of one sample along a new ``dim``: variables with dimensions are stacked, per-sample
    scalars (clean-run values, the same in each) are kept once. Deciding by dimensions, not by equality, keeps the
    stored dims the same on every sample (an unmeasured sample's NaN cells are all equal)."""
    stacked = [name for name, var in results[0].data_vars.items() if var.dims]
    return xr.concat(results, dim=dim, data_vars=stacked, coords="different", compat="equals") \
        .assign_coords({dim: list(labels)})


def with_window_labels(ds: xr.Dataset, window: Window) -> xr.Dataset:
    """A sweep's ``window`` coordinate (its size, -1 for styles without one) and style attributes."""
    ds = ds.assign_coords(window=window.size if window.style in ("center", "inverse") else -1)
    ds.attrs.update(window_style=window.style, window_label=window.label)
    return ds


def unmeasured_sweep(ctx: StudyContext, flows) -> xr.Dataset:
    """The NaN result of `knockout_sweep` for an input that cannot be measured (same dims and coordinates)."""
    num_layers = ctx.adapter.num_layers
    window = ctx.config.window
    flows = [f if isinstance(f, Flow) else Flow.parse(f) for f in (ctx.config.flows or flows)]
    layer_sets = [window.layers(layer, num_layers) for layer in range(num_layers)]
    shape = (len(flows), num_layers)
    ds = knockout_dataset(flows, layer_sets, "layer", np.arange(num_layers, dtype=np.int64), np.full(shape, np.nan),
                          np.full(shape, np.nan), np.full(shape, -1, dtype=np.int64), None, False)
    return with_window_labels(ds, window)


def option_token_ids(ctx: StudyContext) -> dict[str, int]:
    """Each option letter's answer token, as it would follow the answer prompt."""
    return {letter: ctx.adapter.continuation_token_id(ctx.prompt.answer_prompt, letter)
            for letter in ctx.prompt.option_letters}


def predicted_letter(ctx: StudyContext, clean: CleanRun) -> str | None:
    """The option letter the clean run predicts (None when its top token is no option letter)."""
    for letter, token in option_token_ids(ctx).items():
        if token == clean.pred:
            return letter
    return None


def layout_with_prediction(ctx: StudyContext, clean: CleanRun):
    """The layout plus a ``predicted_option`` span when the clean run picked a false option (failure analysis)."""
    if not ctx.prompt.option_letters:
        return ctx.layout
    return prediction_layout(ctx.layout, clean.pred, option_token_ids(ctx).items(), ctx.prompt.true_letter)


def relative_change(new, base) -> np.ndarray:
    """``(p_knockout - p_base) / p_base * 100``: the paper's %p_change."""
    return (np.asarray(new) - base) / base * 100.0

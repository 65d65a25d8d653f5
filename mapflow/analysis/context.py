"""`StudyContext`: one sample, its model and the run's settings, and the study API as its methods.

A study's ``run(ctx)`` measures one sample through ``ctx``:

- ``ctx.sweep(flows)``: knock out each flow in the run's window around each layer (dims ``flow, layer``);
- ``ctx.knockout(flows, {"early": (0, 1), ...})``: each flow in each named set of layers (dims ``flow, layers``);
- ``ctx.clean()``: the unmodified prediction and its correctness; ``ctx.measure(fn, ...)``: any traced measurement,
  here or on the server in one request;
- ``ctx.trace()``: an nnsight trace of the sample for anything else.

The work is done in small modules by job: `mapflow.analysis.config` (the run's settings), `mapflow.analysis.clean` (the
clean run and the correctness rule), `mapflow.analysis.knockouts` (knockout cells on the backend) and
`mapflow.analysis.datasets` (their stored form).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import xarray as xr

from ..backends import Backend, LocalBackend
from ..data.sample import Sample
from ..inputs.prompts import BuiltPrompt
from ..knockout.flows import Window
from ..models.base import PreparedInput, VideoLLMAdapter
from .clean import CleanRun
from .config import StudyConfig

__all__ = ["CleanRun", "StudyConfig", "StudyContext"]

# The methods import their helpers inside their bodies: a traced block that reads ``ctx`` ships StudyContext to an
# NDIF server by value, with the globals its methods name, and the helper modules import xarray, which the server
# does not have (tests/test_remote_server.py runs a notebook function using ctx remotely).


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

    # --- the sample and its model ---------------------------------------------------------------------------------

    def rng(self, salt: str = "") -> np.random.Generator:
        """A generator seeded from the run's seed, the sample and ``salt``: the same draw on every rerun/resume."""
        digest = hashlib.sha256(f"{self.config.seed}|{self.sample.sample_id}|{salt}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    @property
    def layout(self):
        """The token spans of the prepared input (``video``, ``question``, ``option_A``, ``last``, ...)."""
        return self.prepared.layout

    def trace(self, **kwargs):
        """An nnsight tracing context on the sample's prepared input (``with ctx.trace(): ...``)."""
        return self.adapter.trace(self.prepared, **kwargs)

    def answer_token_id(self) -> int:
        """The ground-truth token: the first token of the answer as it would follow the prompt."""
        if self.answer_token is not None:
            return self.answer_token
        if self.config.gt_token == "vocab":
            return int(self.adapter.tokenizer.convert_tokens_to_ids(self.prompt.answer_text))
        return self.adapter.continuation_token_id(self.prompt.answer_prompt, self.prompt.answer_text)

    def option_tokens(self) -> dict[str, int]:
        """Each option letter's answer token, as it would follow the answer prompt (``{"A": id, ...}``)."""
        from . import clean

        return clean.option_token_ids(self)

    def accepted_tokens(self) -> tuple[int, ...]:
        """The token ids the run's correctness rule (``--option correct_by``) counts as the right answer."""
        from . import clean

        return clean.accepted_tokens(self)

    # --- the clean run ----------------------------------------------------------------------------------------------

    def clean(self, logits: torch.Tensor | None = None) -> CleanRun:
        """The unmodified prediction at the last position: ``pred``, ``p_base``, ``p_gt_base``, ``correct`` (from
        ``logits`` when a clean pass already produced them)."""
        from . import clean

        return clean.clean_run(self, logits)

    def clean_from(self, readout: torch.Tensor) -> CleanRun:
        """The clean run from the (pred, p_pred, p_answer) triple a measurement returns instead of logits
        (e.g. ``out["clean"]`` of `mapflow.readouts.lens.clean_and_layer_probabilities` through `measure`)."""
        from . import clean

        return clean.clean_from_readouts(self, readout)

    def wants_knockout(self, clean: CleanRun) -> bool:
        """Whether the run's ``--samples`` mode measures this sample (e.g. ``correct``: only a correct clean run)."""
        from . import knockouts

        return knockouts.wants_knockout(clean, self.config.samples)

    # --- measurements -----------------------------------------------------------------------------------------------

    def measure(self, function, *args):
        """``function(adapter, prepared, *args)`` on the context's backend: here, or remotely in one request for the
        whole sample. ``function`` must live at module level in a server-safe module (e.g.
        `mapflow.knockout.cells`, `mapflow.readouts.lens`) and return plain tensors."""
        return self.backend.measure_sample(function, self.adapter, self.prepared, *args)

    def sweep(self, flows, *, layers=None, window: Window | None = None, heads=None) -> xr.Dataset:
        """Knock out each flow (``"video->last"`` or a `Flow`) in the window (default: the run's ``--window``)
        around each layer of ``layers`` (default: all); one (flow, layer) cell per forward pass. ``heads``: cut only
        those query heads (default ``--heads``). ``--flows`` replaces ``flows``.

        Returns dims ``(flow, layer)``: ``p_knockout`` (probability of the clean prediction), ``rel_change`` (%),
        ``p_gt_knockout`` and ``rel_change_gt`` for the answer token, ``pred_knockout``, ``correct_knockout``, and
        per-sample scalars ``p_base``, ``p_gt_base``, ``pred_base``, ``answer_token``, ``correct`` and
        ``knocked_out``. Samples the ``--samples`` mode skips keep NaN (and -1 tokens) in the cells."""
        from . import knockouts

        return knockouts.knockout_sweep(self, flows, sweep_layers=layers, window=window, heads=heads)

    def knockout(
        self, flows, layer_sets: Mapping[str, tuple[int, ...]], *, dim: str = "layers", heads=None
    ) -> xr.Dataset:
        """Knock out each flow in each named set of layers together (e.g. ``{"first_half": (0, 1, 2, 3), ...}``):
        the variables of `sweep` with dims ``(flow, dim)``, labelled by the sets' names."""
        from . import knockouts

        return knockouts.knockout_layer_sets(self, flows, layer_sets, dim=dim, heads=heads)

    def empty_sweep(self, flows) -> xr.Dataset:
        """What `sweep` returns for an input that cannot be measured: the same dims and coordinates, NaN cells."""
        from . import knockouts

        return knockouts.unmeasured_sweep(self, flows)

    def layout_with_prediction(self, clean: CleanRun):
        """The layout plus a ``predicted_option`` span when the clean run picked a false option (failure analysis)."""
        from . import knockouts

        return knockouts.layout_with_prediction(self, clean)

    @staticmethod
    def stack(results: list[xr.Dataset], dim: str, labels) -> xr.Dataset:
        """Several measurements of one sample along a new ``dim`` (e.g. one `sweep` per window size): variables with
        dimensions are stacked, per-sample scalars (the clean run's) kept once."""
        from .datasets import stack_results

        return stack_results(results, dim, labels)

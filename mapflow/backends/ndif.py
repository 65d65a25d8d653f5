"""The NDIF backend: every trace of a run executes on an NDIF server (a deployment of the same checkpoint).

The adapter keeps its local model for structure, processor and config; `prepare` checks the study, the plan and the
server before the first sample and hands the study a view of the adapter whose traces go to the server
(`mapflow.remote.client.remote_adapter`). A knockout sample's cells, and any `ctx.measure(...)`, are one request
per sample (`RemoteModel.run_cells` / `run_sample`); every other trace is a request of its own.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from ..errors import KnockoutConfigError, MapflowError
from ..remote.preflight import check_study_remotable
from ..remote.settings import RemoteSettings, resolve_settings

log = logging.getLogger(__name__)

# Two requests keep one server replica busy while the other's result travels (the CLI's --concurrency default).
DEFAULT_CONCURRENCY = 2
# The plans a remote run can execute: exact ones. The screen needs a backward pass of the local model.
EXACT_PLANS = ("auto", "naive")
# Traces outside a sample request run the naive plan: under the fast plan ("auto") every such trace would send the
# clean run's keys, values and layer outputs back to the server with every batch (megabytes for the organism, over
# the 1 MiB request cap of this NDIF stack's multipart parser; gigabytes for a 7B model). The naive plan runs one
# full forward per configuration from the raw inputs: numbers identical to the local run, no client-side state.
TRACE_PLAN = "naive"


def check_count(value, what: str) -> None:
    """A setting that counts something: a whole number of at least 1 (not a bool, not 2.5)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MapflowError(f"{what} must be a whole number of at least 1, got {value!r}")


class NDIFBackend:
    """Run a study's traces on an NDIF server.

    ``settings``: a `mapflow.remote.RemoteSettings`, or None / True to resolve them in `prepare` (environment,
    config file, the local stack `mapflow ndif up` left running; the model key from the adapter's checkpoint).
    ``concurrency``: requests in flight at once. ``batch``: samples per request under the sample plan (default: the
    settings' own, i.e. ``MAPFLOW_NDIF_BATCH`` / the config file, else 1). A run keeps ``concurrency * batch``
    samples in flight (`concurrency` below). One run at a time per object; a later run prepares it afresh.
    """

    name = "ndif"

    def __init__(
        self,
        settings: RemoteSettings | bool | None = None,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        batch: int | None = None,
    ):
        if settings is not None and not isinstance(settings, (bool, RemoteSettings)):
            raise TypeError(
                f"NDIFBackend settings must be a mapflow.remote.RemoteSettings or True, got {type(settings).__name__}"
            )
        if settings is False:
            raise ValueError("NDIFBackend(settings=False): a local run uses mapflow.backends.LocalBackend")
        check_count(concurrency, "concurrency (requests in flight)")
        if batch is not None:
            check_count(batch, "remote batch (samples per request)")
        self.requested = settings if isinstance(settings, RemoteSettings) else None
        self.requests_in_flight = int(concurrency)
        self.batch = None if batch is None else int(batch)
        self.settings: RemoteSettings | None = self._with_batch(self.requested)
        self.cells_plan: str | None = None  # the plan the knockout cells run (set by `prepare`)
        self._remote_model = None

    @property
    def concurrency(self) -> int:
        """Samples in flight: each request in flight carries a batch of samples."""
        batch = self.settings.batch if self.settings is not None else (self.batch or 1)
        return self.requests_in_flight * batch

    def _with_batch(self, settings: RemoteSettings | None) -> RemoteSettings | None:
        if settings is None or self.batch is None:
            return settings
        return replace(settings, batch=self.batch)

    def prepare(self, study, adapter, config):
        """Refuse what cannot run remotely, reach the server (a second or two), and return the remote adapter view
        and the run's configuration with the plan its non-cell traces run. Raises `KnockoutConfigError` (a plan a
        server cannot run), `NotRemotable`, `ServerUnreachable`, `AuthRefused` or `ModelNotDeployed`."""
        if config.plan not in EXACT_PLANS:
            raise KnockoutConfigError(
                f"--plan {config.plan} runs locally only (the screen needs a backward pass of "
                "the local model); the NDIF backend runs the exact plans "
                f"({', '.join(EXACT_PLANS)}): drop --remote / remote=, or use --plan auto"
            )
        from ..remote.client import check_server, remote_adapter  # the client (httpx, nnsight's remote) when used

        settings = self.requested or resolve_settings(local_model_dir=adapter.path)
        self.settings = self._with_batch(settings)
        check_study_remotable(study)
        check_server(self.settings)
        # under the sample plan a sample's cells run on the server with the run's own plan; under the trace plan
        # they are traces like any other
        self.cells_plan = config.plan if self.settings.plan == "sample" else TRACE_PLAN
        if config.plan != TRACE_PLAN:
            where = (
                "every trace"
                if self.settings.plan == "trace"
                else "traces outside a sample request (a study's own ctx.trace(), generation, attention maps)"
            )
            log.warning(
                "NDIF backend: plan %s -> %s for %s (same numbers, no client-side state shipped back); "
                "knockout cells run plan %s; recorded as runtime.remote.trace_plan",
                config.plan,
                TRACE_PLAN,
                where,
                self.cells_plan,
            )
            config = replace(config, plan=TRACE_PLAN)
        view = remote_adapter(adapter, self.settings, ship_modules=(study.__name__,), server_plan=self.cells_plan)
        view.backend = None  # the view ships to the server with each sample request; the backend stays here
        self._remote_model = view.model
        return view, config

    def measure_sample(self, function, adapter, prepared, *args):
        return self._prepared().run_sample(function, adapter, prepared, *args)

    def run_cells(self, adapter, prepared, request) -> dict:
        return self._prepared().run_cells(adapter, prepared, request)

    def _prepared(self):
        if self._remote_model is None:
            raise RuntimeError("NDIFBackend.prepare(study, adapter, config) must run before the first sample")
        return self._remote_model

    @property
    def stats(self):
        """Requests, bytes sent and received so far in this run (`mapflow.remote.client.RequestStats`)."""
        return self._prepared().stats

    def cancel(self) -> None:
        if self._remote_model is not None:
            self._remote_model.cancel_requests()

    def describe(self) -> dict:
        if self.settings is None:
            return {"remote": {"settings": "resolved when the run starts", "concurrency": self.requests_in_flight}}
        return {
            "remote": {
                **self.settings.describe(),
                "concurrency": self.requests_in_flight,
                "cells_plan": self.cells_plan,
                "trace_plan": TRACE_PLAN,
            }
        }

    def __repr__(self) -> str:
        where = self.settings.host if self.settings is not None else "settings resolved at the run's start"
        return f"NDIFBackend({where}, concurrency={self.requests_in_flight}, batch={self.batch or 'default'})"

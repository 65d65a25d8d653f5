"""The NDIF backend: every trace of a run executes on an NDIF server (a deployment of the same checkpoint)."""

from __future__ import annotations

from ..remote.run import prepare_remote_run


class NDIFBackend:
    name = "ndif"

    def __init__(self, settings=True, concurrency: int = 1):
        self.settings = settings  # True: resolved from the environment, config file or local stack in `prepare`
        self.concurrency = int(concurrency)
        self._remote_model = None

    def prepare(self, study, adapter, config):
        view, config, self.settings = prepare_remote_run(study, adapter, config, self.settings)
        self._remote_model = view.model
        self.concurrency *= self.settings.batch  # each request in flight carries a batch of samples
        return view, config

    def measure_sample(self, function, adapter, prepared, *args):
        return self._remote_model.run_sample(function, adapter, prepared, *args)

    def run_cells(self, adapter, prepared, request) -> dict:
        return self._remote_model.run_cells(adapter, prepared, request)

    def cancel(self) -> None:
        if self._remote_model is not None:
            self._remote_model.cancel_requests()

    def describe(self) -> dict:
        return {"remote": self.settings.describe()}

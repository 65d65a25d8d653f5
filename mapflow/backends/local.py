"""The default backend: every trace runs in this process, on the adapter's own device."""

from __future__ import annotations


class LocalBackend:
    name = "local"

    def __init__(self, concurrency: int = 1):
        if int(concurrency) < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.concurrency = int(concurrency)

    def prepare(self, study, adapter, config):
        return adapter, config

    def measure_sample(self, function, adapter, prepared, *args):
        return function(adapter, prepared, *args)

    def run_cells(self, adapter, prepared, request) -> dict:
        from ..knockout.cells import knockout_cells  # torch and the engine load with the first sample, not the CLI

        return knockout_cells(adapter, prepared, request)

    def cancel(self) -> None:
        pass

    def describe(self) -> dict:
        return {}  # a store without a backend entry was measured here, as before backends existed

    def __repr__(self) -> str:
        return f"LocalBackend(concurrency={self.concurrency})"

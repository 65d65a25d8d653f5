"""The backend protocol: the few things a run asks of the place its traces execute."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Backend(Protocol):
    """Runs a study's measurements somewhere. One object per run; the runner and the study context talk only to it.

    ``concurrency``: samples in flight at once (the runner keeps the store in sample order whatever it is).
    """

    name: str
    concurrency: int

    def prepare(self, study, adapter, config) -> tuple[Any, Any]:
        """Check everything that can be checked before the first sample; return the adapter the study's traces go
        through and the run configuration this backend runs. A plan it cannot run is refused (`MapflowError`) or
        converted with a logged message, never silently."""

    def measure_sample(self, function, adapter, prepared, *args):
        """``function(adapter, prepared, *args)``: a sample's whole measurement written with traces."""

    def run_cells(self, adapter, prepared, request) -> dict:
        """`mapflow.knockout.cells.knockout_cells` of one sample (its clean readout and every knockout cell)."""

    def cancel(self) -> None:
        """Stop waiting for work in flight (Ctrl-C, or the run stopped on an error)."""

    def describe(self) -> dict:
        """What provenance records about where the run executed (empty for this process)."""

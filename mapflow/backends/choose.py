"""The one place a run's backend is chosen (`mf.run`, `mapflow run`, `run_study` and `mf.load_model` all ask it)."""

from __future__ import annotations

from ..errors import MapflowError
from .base import Backend
from .local import LocalBackend
from .ndif import DEFAULT_CONCURRENCY, NDIFBackend


def choose_backend(
    backend: Backend | None = None, *, remote=None, concurrency: int | None = None, batch: int | None = None
) -> Backend:
    """The backend a run uses.

    ``backend``: a `Backend` object, used as it is (its own settings: pass no others). Else ``remote``: falsy for
    this process (`LocalBackend`), True or a `mapflow.remote.RemoteSettings` for an NDIF server (`NDIFBackend`);
    ``concurrency`` (requests in flight, default 2) and ``batch`` (samples per request) are the NDIF backend's.
    Contradictory input is refused with the reason: a backend and ``remote=``, a backend and its own settings
    passed beside it, or remote-only settings for a local run.
    """
    if backend is not None:
        if not isinstance(backend, Backend):
            raise MapflowError(
                f"backend= takes a mapflow.backends.Backend (name, concurrency, prepare, "
                f"measure_sample, run_cells, cancel, describe), got {type(backend).__name__}"
            )
        given = [
            name
            for name, value in (("remote", remote), ("concurrency", concurrency), ("batch", batch))
            if value not in (None, False)
        ]
        if given:
            raise MapflowError(
                f"backend={backend!r} and {', '.join(f'{n}=' for n in given)} both say where or how "
                "the run executes: pass the settings to the backend's constructor (e.g. "
                "NDIFBackend(settings, concurrency=4)) or drop backend="
            )
        return backend
    if remote:
        return NDIFBackend(remote, concurrency=DEFAULT_CONCURRENCY if concurrency is None else concurrency, batch=batch)
    if batch is not None:
        raise MapflowError("remote batch (--remote-batch, batch=) applies to remote runs (--remote, remote=True)")
    if concurrency not in (None, 1):
        raise MapflowError(
            f"concurrency={concurrency!r}: concurrency applies to remote runs (--remote, remote=True); "
            "a local run measures one sample at a time"
        )
    return LocalBackend()

"""Send every trace of a study to an NDIF server, unchanged.

The adapter keeps its local model for structure, processor and config; only where a trace runs changes. Each trace
is submitted without a websocket and polled (nnsight's non-blocking mode) so the client owns the time limit, then
its saved values are pushed into the caller's variables just as a local trace leaves them. Server-side failures
come back as `errors.RemoteExecutionError` subclasses that name the host and the model.
"""

from __future__ import annotations

import copy
import functools
import io
import operator
import threading
import time
from dataclasses import dataclass, field, replace

import httpx
import nnsight
from nnsight.intervention.backends.remote import RemoteBackend, RemoteError

from .faults import (
    AuthRefused,
    ModelNotDeployed,
    RemoteJobFailed,
    RemoteJobTimeout,
    RequestCancelled,
    ResultTooLarge,
    ServerFault,
    ServerUnreachable,
)
from .settings import RemoteSettings

_CONNECT_TIMEOUT_S = 5.0
_QUEUED = (None, "RECEIVED", "QUEUED")  # job states before the server runs it
QUEUE_LIMITS = 10  # a job may wait in the server's queue up to this many times --remote-timeout
_NOT_DEPLOYED_MARKERS = ("could not deploy", "not deployed", "no deployment", "unknown model")
# What NDIF 0.1.2 says when it drops a job for a reason of its own (api/queue: dispatcher, processor, replica; the
# model actor's cancel and eviction paths): the server's fault, never the sample's
_SERVER_FAULT_MARKERS = (
    "critical server error",
    "replica was evicted",
    "error submitting request to model deployment",
    "cancelled by operator",
    "cancelled or preempted by the server",
    "was cached (warm)",
    "compute backend is reconnecting",
)
_AUTH_STATUS = (401, 403)


@dataclass
class RequestStats:
    """What a client sent and got back: requests, request bytes, result bytes (thread-safe counters)."""

    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, requests: int = 0, bytes_sent: int = 0, bytes_received: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.bytes_sent += bytes_sent
            self.bytes_received += bytes_received

    def snapshot(self) -> dict:
        with self._lock:
            return {"requests": self.requests, "bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received}


class PollingBackend(RemoteBackend):
    """nnsight's remote backend, submitting and polling under our time and size limits and errors."""

    def __init__(
        self, settings: RemoteSettings, stats: RequestStats | None = None, cancelled: threading.Event | None = None
    ):
        super().__init__(settings.model_key, host=settings.host, api_key=settings.api_key, blocking=False)
        self.settings = settings
        self.stats = stats if stats is not None else RequestStats()
        self.cancelled = cancelled or threading.Event()  # set: stop waiting (the run is being stopped)
        self.display.enabled = False  # one status line per trace would drown the run's own progress bar

    def __call__(self, tracer=None):
        self.job_id = None
        try:
            self.submit(tracer)
            result = self._wait(tracer)
        except RemoteError as err:
            raise self._classify(str(err)) from None
        except httpx.HTTPError as err:
            raise self._lost(f"lost the server while running a trace: {err}") from None
        if isinstance(result, dict):
            self._push(result, tracer)  # the blocking path's hand-back: `x = ....save()` variables fill in
        return result

    def _lost(self, what: str) -> ServerUnreachable:
        return ServerUnreachable(
            f"{what}. The run stops here: every stored sample is kept and nothing was recorded "
            "as failed; run the same command again once the server is back (`mapflow ndif up` "
            "for a local one) to resume.",
            host=self.host,
            model=self.settings.model_label,
        )

    def _wait(self, tracer):
        """Poll until the job completes. The time limit counts from when the server starts the job: with several
        requests in flight, time queued behind another one's job is not this job's fault (the queue itself gets
        `QUEUE_LIMITS` times the limit). A server that stays unreachable (or whose compute backend stays down) for
        ``server_timeout_s`` stops the wait with `ServerUnreachable`, whatever the job's own limit."""
        limit = self.settings.timeout_s
        submitted = time.monotonic()
        started = None
        delay = self.settings.poll_interval_s
        unreachable_since = None  # first failed poll or liveness check of the current outage
        last_check = submitted
        heartbeat = max(1.0, self.settings.server_timeout_s / 4)
        while True:
            problem = None
            try:
                result = self.poll(tracer)
            except httpx.HTTPError as err:
                problem, result = f"{type(err).__name__}: {err}", None
            else:
                status = getattr(self.status, "name", None)
                if status == "COMPLETED":
                    return result
            now = time.monotonic()
            if problem is None and now - last_check >= heartbeat:  # a job status can stall while the backend is dead
                last_check = now
                problem = self._backend_problem()
            if problem is None:
                unreachable_since = None
            else:
                unreachable_since = unreachable_since or now
                if now - unreachable_since >= self.settings.server_timeout_s:
                    raise self._lost(
                        f"lost the server: no usable answer for {now - unreachable_since:.0f} s "
                        f"(last: {problem}) while waiting for job {self.job_id}"
                    )
            if self.cancelled.is_set():
                raise RequestCancelled(
                    f"job {self.job_id} abandoned: the run was stopped", host=self.host, model=self.settings.model_label
                )
            status = getattr(self.status, "name", None)
            if started is None and status not in _QUEUED:
                started = now
            if (started is not None and now - started > limit) or now - submitted > limit * QUEUE_LIMITS:
                raise RemoteJobTimeout(
                    f"job {self.job_id} did not finish within {limit:g} s (last status: "
                    f"{status or 'none'}, {now - submitted:.1f} s since it was submitted)",
                    host=self.host,
                    model=self.settings.model_label,
                )
            self.cancelled.wait(delay if problem is None else min(1.0, self.settings.server_timeout_s / 10))
            delay = min(delay * 2, self.settings.max_poll_interval_s)

    def _client(self) -> httpx.Client:
        wait = self.settings.server_http_timeout_s
        return httpx.Client(timeout=httpx.Timeout(wait, connect=min(wait, _CONNECT_TIMEOUT_S)))

    def _headers(self):
        return {"ndif-api-key": self.api_key} if self.api_key else None

    def poll(self, tracer=None):
        """nnsight's poll (GET /response/<job>), under the server timeout's HTTP limits instead of its 600 s read."""
        with self._client() as client:
            response = client.get(f"{self.host}/response/{self.job_id}", headers=self._headers())
        if response.status_code == 404:
            return None  # no status recorded yet
        if response.status_code in _AUTH_STATUS:
            raise AuthRefused(
                f"the server refused our API key ({response.status_code}: {response.text[:200]})",
                host=self.host,
                model=self.settings.model_label,
            )
        response.raise_for_status()
        from nnsight.schema.response import ResponseModel

        parsed = ResponseModel.model_validate_json(response.text)
        self.status = parsed.status
        return self.handle(parsed)

    def _backend_problem(self) -> str | None:
        """Why the server cannot finish jobs now (API unreachable, compute backend down), or None."""
        try:
            with self._client() as client:
                response = client.get(f"{self.host}/connected", headers=self._headers())
        except httpx.HTTPError as err:
            return f"{type(err).__name__}: {err}"
        if response.status_code in _AUTH_STATUS:
            raise AuthRefused(
                f"the server refused our API key ({response.status_code})",
                host=self.host,
                model=self.settings.model_label,
            )
        if response.status_code != 200:
            return f"{response.status_code} {response.text[:200]}"
        return None

    def _post(self, request, blob):
        self.stats.add(requests=1, bytes_sent=len(blob))
        from nnsight.intervention.backends import remote as nnsight_remote

        # nnsight's POST waits up to 600 s for an answer; a hung API must not hold the run longer than the server
        # timeout (the server answers a submission at once, the upload itself is not limited by this)
        nnsight_remote._READ_TIMEOUT = min(nnsight_remote._READ_TIMEOUT, self.settings.server_timeout_s)
        try:
            return super()._post(request, blob)
        except RemoteError as err:
            cause = err.__cause__
            if isinstance(cause, httpx.HTTPStatusError) and cause.response.status_code in _AUTH_STATUS:
                raise AuthRefused(
                    f"the server refused the job: {err} (a local stack's token is sent by itself when "
                    "the host is its loopback address; else pass --ndif-api-key)",
                    host=self.host,
                    model=self.settings.model_label,
                ) from None
            if isinstance(cause, httpx.TransportError) or (
                isinstance(cause, httpx.HTTPStatusError) and cause.response.status_code >= 500
            ):
                raise self._lost(f"the NDIF API cannot take jobs: {err}") from None
            raise RemoteJobFailed(
                f"the server refused the job: {err}", host=self.host, model=self.settings.model_label
            ) from None

    def download_result(self, url):
        limit = int(self.settings.max_result_mb * 1024 * 1024)
        if isinstance(url, (bytes, bytearray)):
            self.stats.add(bytes_received=len(url))
            self._check_size(len(url), limit)
            return self.finalize(bytes(url))
        if not url:
            return None
        buffer = io.BytesIO()
        with httpx.Client(timeout=httpx.Timeout(_CONNECT_TIMEOUT_S, read=self.settings.timeout_s)) as client:
            with client.stream("GET", url) as response:
                response.raise_for_status()
                self._check_size(int(response.headers.get("Content-Length", 0)), limit)
                for chunk in response.iter_bytes(chunk_size=1 << 17):
                    buffer.write(chunk)
                    self._check_size(buffer.tell(), limit)  # a server that sends no length is cut off too
        self.stats.add(bytes_received=buffer.tell())
        return self.finalize(buffer.getvalue())

    def _check_size(self, size: int, limit: int) -> None:
        if size > limit:
            raise ResultTooLarge(
                f"job {self.job_id} returned more than {size / 2**20:.2f} MiB of saved values; the "
                f"limit is {self.settings.max_result_mb:g} MiB (raise --max-result-mb, or save "
                "less per trace)",
                host=self.host,
                model=self.settings.model_label,
            )

    def _classify(self, description: str):
        text = description.lower()
        if any(marker in text for marker in _SERVER_FAULT_MARKERS):
            return ServerFault(
                f"the server dropped job {self.job_id} for a reason of its own: {description.strip()}. "
                "The run stops here: every stored sample is kept and nothing was recorded as failed; "
                "run the same command again once the server is back to resume.",
                host=self.host,
                model=self.settings.model_label,
            )
        if any(marker in text for marker in _NOT_DEPLOYED_MARKERS):
            return ModelNotDeployed(
                f"the server has no deployment of this model: {description}",
                host=self.host,
                model=self.settings.model_label,
            )
        return RemoteJobFailed(
            f"job {self.job_id} raised on the server:\n{description}", host=self.host, model=self.settings.model_label
        )


# Not installed on an NDIF server: the functions traced blocks call ship as source with each request.
SHIPPED_PACKAGES = ("mapflow",)  # the studies ship inside it (mapflow.studies)


def _memoize_source_scans() -> None:
    """nnsight finds the names each shipped function reads by running ``symtable`` over its source, for every
    function on every request (a sample request ships ~100 of mapflow's): about a third of a second of client CPU
    per request here. The answer depends on the source text alone, so it is cached per source (a copy is returned,
    as the caller may change it). Skipped if nnsight no longer has the function."""
    from nnsight.intervention import serialization

    scan = getattr(serialization, "_function_referenced_names", None)
    if scan is None or getattr(scan, "mapflow_memoized", False):
        return
    cached = functools.lru_cache(maxsize=4096)(lambda source: frozenset(scan(source)))

    def memoized(source: str) -> set[str]:
        return set(cached(source))

    memoized.mapflow_memoized = True
    serialization._function_referenced_names = memoized


class RemoteModel:
    """Stands in for an adapter's nnsight model: envoys are the local ones, every ``trace`` runs on the server."""

    def __init__(self, local_model, settings: RemoteSettings, ship_modules=(), server_plan: str = "auto"):
        import nnsight

        self._local_model = local_model
        self.settings = settings
        self.server_plan = server_plan  # the engine plan a sample request runs on the server
        self.stats = RequestStats()
        self.cancelled = threading.Event()
        self._batch_lock = threading.Lock()
        self._batchers = {}  # id(adapter view) -> Batcher (--remote-batch > 1)
        _memoize_source_scans()
        for name in (*SHIPPED_PACKAGES, *ship_modules):
            nnsight.register(name)

    def trace(self, *inputs, **kwargs):
        if kwargs.get("backend") is not None:
            raise ValueError("a remote model chooses its own backend")
        return self._local_model.trace(*inputs, backend=self._backend(), **kwargs)

    def _backend(self) -> PollingBackend:
        return PollingBackend(self.settings, self.stats, self.cancelled)

    def cancel_requests(self) -> None:
        """Make every request in flight stop waiting for its result (Ctrl-C, or the run stopped on an error)."""
        self.cancelled.set()

    def run_cells(self, adapter, prepared, request):
        """`mapflow.knockout.cells.knockout_cells` of one sample. The sample plan runs it whole in one request (a session
        whose body is plain Python on the server, its traces run there as reached), so the clean run's keys, values
        and hidden states stay on the server and only the cells come back; the trace plan runs it here, each of its
        traces a request of its own."""
        from ..knockout.cells import knockout_cells

        if self.settings.plan != "sample":
            return knockout_cells(adapter, prepared, request)
        request = replace(request, plan=self.server_plan)
        if self.settings.batch > 1:  # wait briefly for other samples in flight, one request for them all
            return self._batcher(adapter).submit((prepared, request))
        return self.run_sample(knockout_cells, adapter, prepared, request)

    def run_sample(self, function, adapter, prepared, *args):
        """``function(adapter, prepared, *args)``, a sample's whole measurement written with traces (defined at module
        level in a shipped module, importing mapflow only at its top): under the sample plan in one request, a session
        whose body runs on the server as plain Python, so only its result travels back; under the trace plan here,
        each of its traces a request of its own."""
        if self.settings.plan != "sample":
            return function(adapter, prepared, *args)
        # the block ships the adapter, whose ``hf_model`` is the root module: an envoy tags its module (and the
        # interleaver) as a server-side reference when it is pickled, so tag the root before the adapter is
        self._local_model.__getstate__()
        with self._local_model.session(backend=self._backend()):
            result = nnsight.save(function(adapter, prepared, *args))
        return result

    def _batcher(self, adapter):
        from .batch import Batcher

        with self._batch_lock:
            if self._batchers.get(id(adapter)) is None:
                self._batchers[id(adapter)] = Batcher(self.settings.batch, functools.partial(self._send_batch, adapter))
            return self._batchers[id(adapter)]

    def _send_batch(self, adapter, items) -> list:
        """`knockout_cells_batch` of ``items`` in one request; a sample whose computation raised gets its error."""
        from ..knockout.cells import knockout_cells_batch

        self._local_model.__getstate__()  # as in `run_sample`
        with self._local_model.session(backend=self._backend()):
            results = nnsight.save(knockout_cells_batch(adapter, list(items)))
        return [
            RemoteJobFailed(
                f"the sample's computation raised on the server: {r}",
                host=self.settings.host,
                model=self.settings.model_label,
            )
            if isinstance(r, str)
            else r
            for r in results
        ]

    def __getattr__(self, name):
        return getattr(self._local_model, name)

    def __reduce__(self):  # inside a shipped block the server's own model stands where this one was
        return _FIRST, ((self._local_model,),)


class ClientOnly:
    """An object only the client uses (e.g. the processor, which turns frames into tensors): it works as itself here
    and arrives on the server as None, so the server needs neither it nor its dependencies (e.g. torchvision)."""

    def __init__(self, target):
        self._target = target

    def __getattr__(self, name):
        return getattr(self._target, name)

    def __call__(self, *args, **kwargs):
        return self._target(*args, **kwargs)

    def __reduce__(self):
        return _FIRST, ((None,),)


# Unpickles as its argument's first item. A C-level callable pickles by reference, where a function of ours would be
# shipped by value (as source, which must match the file the client imported).
_FIRST = operator.itemgetter(0)


def remote_adapter(adapter, settings: RemoteSettings, ship_modules=(), server_plan: str = "auto"):
    """A view of ``adapter`` whose traces run on the server; ``adapter`` itself stays local."""
    if isinstance(adapter.model, RemoteModel):
        raise ValueError("the adapter already runs remotely")
    view = copy.copy(adapter)
    view.model = RemoteModel(adapter.model, settings, ship_modules, server_plan)
    view.processor = ClientOnly(adapter.processor)
    return view


def deployed_models(settings: RemoteSettings) -> dict[str, dict]:
    """model key -> the server's status entry for it (state, dtype, ...). Raises `ServerUnreachable`."""
    headers = {"ndif-api-key": settings.api_key} if settings.api_key else None
    try:
        with httpx.Client(timeout=httpx.Timeout(_CONNECT_TIMEOUT_S, read=60.0)) as client:
            connected = client.get(f"{settings.host}/connected", headers=headers)
            if connected.status_code in _AUTH_STATUS:
                sent = "our API key" if settings.api_key else "a request without an API key"
                raise AuthRefused(
                    f"the server refused {sent} ({connected.status_code}): pass --ndif-api-key (a "
                    "local stack's token file is named by `mapflow ndif status`)",
                    host=settings.host,
                    model=settings.model_label,
                )
            if connected.status_code != 200:
                raise ServerUnreachable(
                    f"the NDIF API answers but its compute backend is not connected "
                    f"({connected.status_code}: {connected.text[:200]})",
                    host=settings.host,
                    model=settings.model_label,
                )
            status = client.get(f"{settings.host}/status", headers=headers)
            status.raise_for_status()
    except httpx.HTTPError as err:
        raise ServerUnreachable(f"no NDIF API answers: {err}", host=settings.host, model=settings.model_label) from None
    return deployments_in_status(status.json())


def deployments_in_status(body) -> dict[str, dict]:
    """model key -> entry, from NDIF's /status body: actors are named ``[replica:]ModelActor:<model key>``."""
    deployments = body.get("deployments", {}) if isinstance(body, dict) else {}
    found = {}
    for name, entry in deployments.items():
        if not isinstance(entry, dict):
            continue
        key = entry.get("model_key") or name.split("ModelActor:", 1)[-1]
        if found.get(key, {}).get("application_state") != "RUNNING":  # the healthiest replica speaks for the model
            found[key] = entry
    return found


def check_server(settings: RemoteSettings) -> dict:
    """Fail fast, before any sample: the server answers and runs a deployment under our model key."""
    models = deployed_models(settings)
    entry = models.get(settings.model_key)
    if entry is None:
        known = "\n  ".join(sorted(models)) or "(none)"
        raise ModelNotDeployed(
            f"no deployment under the key\n  {settings.model_key}\ndeployed:\n  {known}\n"
            "(deploy it with `mapflow ndif deploy CHECKPOINT` on a local server)",
            host=settings.host,
            model=settings.model_label,
        )
    if entry.get("application_state") not in (None, "RUNNING"):
        raise ModelNotDeployed(
            f"the deployment is {entry.get('application_state')}, not RUNNING",
            host=settings.host,
            model=settings.model_label,
        )
    return entry


__all__ = [
    "ClientOnly",
    "PollingBackend",
    "RemoteModel",
    "RequestStats",
    "check_server",
    "deployed_models",
    "remote_adapter",
]

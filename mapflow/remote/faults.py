"""What can go wrong when a study runs on an NDIF server. Every message names the host, the model and, once the
runner knows it, the sample.

Two families, because they call for different reactions:

- `RemoteUnavailable` (server unreachable or gone, model not deployed): no later sample can succeed either, so the run
  stops at once; the samples already stored stay stored and a re-run resumes after them.
- `RemoteSampleError` (the job raised on the server, ran past its time limit, or returned too much): this sample is
  recorded as failed and the run goes on, exactly like a local error in one sample.
"""

from __future__ import annotations

from ..errors import MapflowError, RunInterrupted


class RemoteExecutionError(MapflowError):
    """Base: a remote trace failed. ``host`` and ``model`` are always set; ``sample`` once the runner adds it."""

    def __init__(self, message: str, *, host: str, model: str, sample: str | None = None):
        self.detail = message
        self.host = host
        self.model = model
        self.sample = sample
        super().__init__(self._text())

    def _text(self) -> str:
        where = f"host {self.host}, model {self.model}"
        if self.sample is not None:
            where += f", sample {self.sample}"
        return f"[{where}] {self.detail}"

    def at_sample(self, sample_id: str) -> RemoteExecutionError:
        """The same error, now naming the sample it happened in."""
        self.sample = str(sample_id)
        self.args = (self._text(),)
        return self

    def __str__(self) -> str:
        return self._text()


class RemoteUnavailable(RemoteExecutionError, RunInterrupted):
    """The server cannot run anything for us right now; the run stops (finished samples are kept)."""


class ServerUnreachable(RemoteUnavailable):
    """No NDIF API answers at the host (never started, stopped, or died mid-study)."""


class ServerFault(RemoteUnavailable):
    """The server gave up on a job for a reason of its own (its compute backend died, the replica was evicted, the
    queue was purged): not the sample's fault, so nothing is recorded as failed and the run stops."""


class AuthRefused(RemoteUnavailable):
    """The server refused the API key (a local stack's token is sent automatically; else --ndif-api-key)."""


class RequestCancelled(RemoteUnavailable):
    """The run was stopped (Ctrl-C, or another sample lost the server) while this request was in flight."""


class ModelNotDeployed(RemoteUnavailable):
    """The server is up but has no deployment under the model key."""


class RemoteSampleError(RemoteExecutionError):
    """One sample's job failed; the run records it and goes on."""


class RemoteJobFailed(RemoteSampleError):
    """The job raised on the server; the message carries the server's traceback."""


class RemoteJobTimeout(RemoteSampleError):
    """The job did not finish within the configured time limit."""


class ResultTooLarge(RemoteSampleError):
    """The job's saved values exceed the configured limit on what a result may weigh."""


class NotRemotable(MapflowError):
    """A study uses something that cannot run on a remote server (found before anything is sent)."""

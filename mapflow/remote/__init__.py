"""The NDIF client: settings (`config`), the polling client that sends traces to a server (`client`), the checks
made before anything is sent (`preflight`), request batching (`batch`), the errors a server's answers become
(`errors`), and how a client finds a local stack's address and token (`local_stacks`).

Runs go through the NDIF backend (`mapflow.backends.NDIFBackend`: ``remote=True`` / ``mapflow run --remote``);
standing a local server up is the operator's job (`mapflow.ndif_local`, ``mapflow ndif up``). See docs/remote.md
("Remote execution on NDIF").
"""

from .faults import (
    AuthRefused,
    ModelNotDeployed,
    NotRemotable,
    RemoteExecutionError,
    RemoteJobFailed,
    RemoteJobTimeout,
    RemoteSampleError,
    RemoteUnavailable,
    ResultTooLarge,
    ServerFault,
    ServerUnreachable,
)
from .settings import RemoteSettings, model_key_for, resolve_settings

__all__ = [
    "AuthRefused",
    "ModelNotDeployed",
    "NotRemotable",
    "RemoteExecutionError",
    "RemoteJobFailed",
    "RemoteJobTimeout",
    "RemoteSampleError",
    "RemoteSettings",
    "RemoteUnavailable",
    "ResultTooLarge",
    "ServerFault",
    "ServerUnreachable",
    "model_key_for",
    "resolve_settings",
]

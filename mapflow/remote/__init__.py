"""Run studies on an NDIF server (``remote=True`` / ``mapflow run --remote``) and stand up a local one
(``mapflow ndif up``). See README "Remote execution on NDIF"."""

from .config import RemoteSettings, model_key_for, resolve_settings
from .errors import (
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
from .run import prepare_remote_run

__all__ = ["AuthRefused", "ModelNotDeployed", "NotRemotable", "RemoteExecutionError", "RemoteJobFailed",
           "RemoteJobTimeout", "RemoteSampleError", "RemoteSettings", "RemoteUnavailable", "ResultTooLarge",
           "ServerFault", "ServerUnreachable", "model_key_for", "prepare_remote_run", "resolve_settings"]

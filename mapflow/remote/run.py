"""Turn a local study run into a remote one: pre-flight checks, the remote adapter view, the remote plan."""

from __future__ import annotations

import logging
from dataclasses import replace
from types import ModuleType

from .client import check_server, remote_adapter
from .config import RemoteSettings, resolve_settings
from .preflight import check_study_remotable

log = logging.getLogger(__name__)

# Knockout measurements run whole on the server, one request per sample (`RemoteModel.run_cells`), under the run's
# own plan. Every other trace is its own request, and there the fast plan ("auto") would send the clean run's keys,
# values and layer outputs back to the server with every batch (megabytes for the organism, over the 1 MiB request
# cap of this NDIF stack's multipart parser; gigabytes for a 7B model): those traces use the naive plan, one full
# forward per configuration from the raw inputs, numbers identical to the local run.
REMOTE_PLAN = "naive"


def prepare_remote_run(study: ModuleType, adapter, config, remote):
    """Check everything that can be checked before the first sample and return (remote adapter, config, settings).

    ``remote`` is True (settings from environment, config file or the local stack) or a `RemoteSettings`.
    Raises `NotRemotable`, `ServerUnreachable` or `ModelNotDeployed` within a second or two.
    """
    settings = remote if isinstance(remote, RemoteSettings) else resolve_settings(local_model_dir=adapter.path)
    check_study_remotable(study)
    check_server(settings)
    server_plan = config.plan  # what a sample request (`RemoteModel.run_cells`) runs on the server
    if config.plan != REMOTE_PLAN:
        log.info("remote run: plan %s -> %s (same numbers, no client-side state shipped back)", config.plan,
                 REMOTE_PLAN)
        config = replace(config, plan=REMOTE_PLAN)
    return remote_adapter(adapter, settings, ship_modules=(study.__name__,), server_plan=server_plan), config, settings

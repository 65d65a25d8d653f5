"""Where a remote run goes: the NDIF host, the API key, the deployed model key and the client's limits.

Each setting comes from the first place that has it: an explicit argument (a CLI flag), an environment variable
(``MAPFLOW_NDIF_HOST``, ``MAPFLOW_NDIF_API_KEY``, ``MAPFLOW_NDIF_MODEL``, ``MAPFLOW_NDIF_TIMEOUT``,
``MAPFLOW_NDIF_SERVER_TIMEOUT``), a TOML config file (``--remote-config``, else ``$MAPFLOW_REMOTE_CONFIG``, else
``~/.config/mapflow/remote.toml``) with the keys ``host``, ``api_key``, ``model``, ``timeout_s``, ``max_result_mb``,
``server_timeout_s``, and finally, for the host and the API key only, the local stack that ``mapflow ndif up``
started (its token file, readable by the user who started it).
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..errors import MapflowError

# The wrapper class NDIF rebuilds a transformers checkpoint with; the task decides the architecture it loads.
TRANSFORMERS_WRAPPER = "nnsight.modeling.transformers.TransformersModel"
VIDEO_LLM_TASK = "image-text-to-text"

DEFAULT_CONFIG_FILE = Path("~/.config/mapflow/remote.toml")
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_MAX_RESULT_MB = 512.0
# How long a server may stay unreachable (refused connections, no answer, compute backend down) before the run stops:
# detection takes at most this plus one HTTP timeout (`server_http_timeout_s`), under a minute by default.
DEFAULT_SERVER_TIMEOUT_S = 30.0
REMOTE_PLANS = ("sample", "trace")


def model_key_for(repo_id: str, task: str = VIDEO_LLM_TASK, revision: str | None = None) -> str:
    """The key nnsight mints for ``TransformersModel(repo_id, task=task)``: the server finds a deployment by it."""
    return f"{TRANSFORMERS_WRAPPER}:" + json.dumps({"repo_id": repo_id, "revision": revision, "task": task})


def resolve_model_key(model: str) -> str:
    """A full model key is taken as is; a repo id or a checkpoint path becomes the key NDIF deploys it under."""
    if ":" in model and "{" in model:
        return model
    path = Path(model).expanduser()
    return model_key_for(str(path.resolve()) if path.exists() else model)


# One sample per request unless asked: batching pays off only when a sample's compute is shorter than a request's
# fixed cost (small models; see docs/remote.md), and a batch's request fails or times out for all of its samples at once.
DEFAULT_BATCH = 1


@dataclass(frozen=True)
class RemoteSettings:
    host: str
    model_key: str
    api_key: str = ""
    timeout_s: float = DEFAULT_TIMEOUT_S  # one trace, submit to result
    max_result_mb: float = DEFAULT_MAX_RESULT_MB  # one trace's saved values
    server_timeout_s: float = DEFAULT_SERVER_TIMEOUT_S  # the server unreachable this long: the run stops
    poll_interval_s: float = 0.02  # first wait between status polls; doubles up to `max_poll_interval_s`
    max_poll_interval_s: float = 0.1  # a sample request takes about a second: coarser polls would add their wait
    # "sample": a knockout study's whole sample is one request running the fast engine on the server; "trace": every
    # trace is its own request (the naive plan, one full forward per cell)
    plan: str = "sample"
    # samples per request under the sample plan (`mapflow.remote.batch`): B samples in flight share one request
    batch: int = DEFAULT_BATCH

    def __post_init__(self):
        if self.plan not in REMOTE_PLANS:
            raise MapflowError(f"remote plan must be one of {REMOTE_PLANS}, got {self.plan!r}")
        if not self.server_timeout_s > 0:
            raise MapflowError(f"the server timeout (server_timeout_s) must be positive, got {self.server_timeout_s!r}")
        if not isinstance(self.batch, int) or self.batch < 1:
            raise MapflowError(
                f"remote batch (--remote-batch) must be a whole number of at least 1, got {self.batch!r}"
            )

    @property
    def server_http_timeout_s(self) -> float:
        """Connect and read limit of one status poll or liveness check."""
        return min(10.0, self.server_timeout_s)

    @property
    def model_label(self) -> str:
        """The model key's repo id (what a person recognises), or the key itself."""
        try:
            return json.loads(self.model_key.split(":", 1)[1])["repo_id"]
        except (IndexError, ValueError, KeyError, TypeError):
            return self.model_key

    def describe(self) -> dict:
        """For a run's provenance (never the API key)."""
        return {
            "host": self.host,
            "model_key": self.model_key,
            "timeout_s": self.timeout_s,
            "max_result_mb": self.max_result_mb,
            "server_timeout_s": self.server_timeout_s,
            "plan": self.plan,
            "batch": self.batch,
        }


def load_config_file(path: str | os.PathLike | None) -> dict:
    explicit = path or os.environ.get("MAPFLOW_REMOTE_CONFIG")
    file = Path(explicit or DEFAULT_CONFIG_FILE).expanduser()
    if not file.is_file():
        if explicit:
            raise MapflowError(f"remote config file {file} does not exist")
        return {}
    try:
        return tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as err:
        raise MapflowError(f"remote config file {file} is not valid TOML: {err}") from None


def resolve_settings(
    *,
    host: str | None = None,
    api_key: str | None = None,
    model: str | None = None,
    local_model_dir: str | os.PathLike | None = None,
    timeout_s: float | None = None,
    max_result_mb: float | None = None,
    config_file: str | os.PathLike | None = None,
    plan: str | None = None,
    batch: int | None = None,
    server_timeout_s: float | None = None,
) -> RemoteSettings:
    """Settings from arguments, then environment, then config file, then the local stack (host only).

    The model defaults to the local checkpoint directory the client loads its structure from: that is the key
    ``mapflow ndif deploy`` deploys a local checkpoint under.
    """
    file = load_config_file(config_file)
    env = os.environ

    def pick(value, env_name, file_key):
        for candidate in (value, env.get(env_name), file.get(file_key)):
            if candidate not in (None, ""):
                return candidate
        return None

    host = pick(host, "MAPFLOW_NDIF_HOST", "host")
    if host is None:
        from .local_stacks import running_stack_host

        host = running_stack_host()
    if host is None:
        raise MapflowError(
            'no NDIF host: pass --ndif-host, set MAPFLOW_NDIF_HOST, write host = "..." in '
            f"{DEFAULT_CONFIG_FILE}, or start a local server with `mapflow ndif up`"
        )
    host = str(host).rstrip("/")
    if not host.startswith(("http://", "https://")):
        raise MapflowError(f"NDIF host {host!r} must start with http:// or https://")
    model = pick(model, "MAPFLOW_NDIF_MODEL", "model") or local_model_dir
    if model is None:
        raise MapflowError("no remote model: pass --remote-model with the key the server deployed it under")
    api_key = pick(api_key, "MAPFLOW_NDIF_API_KEY", "api_key")
    if api_key is None:  # a local stack's own token, found by its port
        from .local_stacks import token_for_host

        api_key = token_for_host(host)
    return RemoteSettings(
        host=host,
        model_key=resolve_model_key(str(model)),
        api_key=str(api_key or ""),
        timeout_s=float(pick(timeout_s, "MAPFLOW_NDIF_TIMEOUT", "timeout_s") or DEFAULT_TIMEOUT_S),
        max_result_mb=float(
            pick(max_result_mb, "MAPFLOW_NDIF_MAX_RESULT_MB", "max_result_mb") or DEFAULT_MAX_RESULT_MB
        ),
        server_timeout_s=float(
            pick(server_timeout_s, "MAPFLOW_NDIF_SERVER_TIMEOUT", "server_timeout_s") or DEFAULT_SERVER_TIMEOUT_S
        ),
        plan=str(pick(plan, "MAPFLOW_NDIF_PLAN", "plan") or "sample"),
        batch=_whole(pick(batch, "MAPFLOW_NDIF_BATCH", "batch") or DEFAULT_BATCH, "remote batch"),
    )


def _whole(value, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise MapflowError(f"{what} must be a whole number, got {value!r}") from None

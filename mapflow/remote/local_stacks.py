"""Where the local NDIF stacks keep their state, read by the client: one directory per stack, a per-user index of
them by API port, their tokens.

Each stack keeps everything in its own directory (``stack.json``, logs, Ray's session files, its private ``HOME``
and temp dirs, its API token): ``--home``, else ``$MAPFLOW_NDIF_HOME``, else ``~/.cache/mapflow/ndif/<api port>``.
``ndif up`` links the directory into ``~/.cache/mapflow/ndif/by-port/<api port>`` so a client given only a host (or
nothing, when one stack runs) finds the stack and its token. Two stacks on one machine therefore never share a file.

This module only reads (and drops index entries of stacks that are gone); the operator (`mapflow.ndif_local`)
writes the state and the index, through `mapflow.ndif_local.state`, so the client's configuration
(`mapflow.remote.settings`) finds a running local server and its token without importing the operator.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from ..errors import MapflowError

STATE_FILE = "stack.json"
TOKEN_FILE = "api_token"  # the API token (0600); the client sends it as `ndif-api-key`
DEFAULT_BIND = "127.0.0.1"


def stacks_root() -> Path:
    """Where default stack homes and the by-port index live (per user: under their home directory)."""
    return Path("~/.cache/mapflow/ndif").expanduser()


def _index_dir() -> Path:
    return stacks_root() / "by-port"


def default_home(port: int | None = None) -> Path | None:
    """``$MAPFLOW_NDIF_HOME``, else the per-port default for ``port``; None when neither is known."""
    if os.environ.get("MAPFLOW_NDIF_HOME"):
        return Path(os.environ["MAPFLOW_NDIF_HOME"]).expanduser()
    return None if port is None else stacks_root() / str(int(port))


@dataclass
class StackState:
    home: str
    venv: str
    ports: dict[str, int]
    pids: dict[str, int] = field(default_factory=dict)  # service -> pid (= its process group: started with setsid)
    start_ticks: dict[str, int] = field(default_factory=dict)  # service -> its start time, to tell a reused pid
    models: dict[str, str] = field(default_factory=dict)  # model key -> checkpoint
    started_at: float = 0.0
    timings_s: dict[str, float] = field(default_factory=dict)
    bind: str = DEFAULT_BIND  # the address every listener binds (loopback unless `ndif up --host` says otherwise)

    @property
    def host(self) -> str:
        return f"http://{client_address(self.bind)}:{self.ports['api']}"

    @property
    def token_file(self) -> Path:
        return Path(self.home, TOKEN_FILE)

    def save(self) -> None:
        Path(self.home, STATE_FILE).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, home: Path) -> StackState | None:
        file = Path(home, STATE_FILE)
        if not file.is_file():
            return None
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in json.loads(file.read_text()).items() if k in known})


def client_address(bind: str) -> str:
    """The address a client on this machine reaches a listener bound to ``bind`` at."""
    return "127.0.0.1" if bind in ("0.0.0.0", "::", "") else bind


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (a pid reused by another process has another)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def ours(state: StackState, name: str) -> int | None:
    """The pid of the service we started under ``name``, if that very process still runs."""
    pid = state.pids.get(name)
    if pid is None or not _alive(pid) or _start_ticks(pid) != state.start_ticks.get(name):
        return None
    return pid


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie we have not reaped yet counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


# ---- the by-port index (written by `mapflow.ndif_local.state.register`) ----------------------------------------


def registered_homes() -> dict[int, Path]:
    """API port -> stack home, for every stack ``ndif up`` registered and ``ndif down`` has not removed."""
    index = _index_dir()
    if not index.is_dir():
        return {}
    found = {}
    for link in index.iterdir():
        state = StackState.load(link) if link.name.isdigit() else None
        if state is not None and state.ports.get("api") == int(link.name):
            found[int(link.name)] = link.resolve()
        elif link.is_symlink():  # its home is gone, or its stack came back on another port: a stale entry
            try:
                link.unlink()
            except OSError:
                pass
    return found


def running_stacks() -> dict[int, StackState]:
    """API port -> state, for the registered stacks whose API process still runs."""
    found = {}
    for port, home in registered_homes().items():
        state = StackState.load(home)
        if state is not None and state.ports.get("api") == port and ours(state, "api") is not None:
            found[port] = state
    return found


def _port_of(host: str) -> int | None:
    parsed = urlparse(host)
    if parsed.hostname not in ("127.0.0.1", "localhost", "::1") or parsed.port is None:
        return None
    return parsed.port


def stack_for_host(host: str) -> StackState | None:
    """The running local stack serving ``host`` (a loopback URL), if any."""
    port = _port_of(host)
    home = default_home()
    candidates = [StackState.load(home)] if home is not None else []
    if port is not None and port in registered_homes():
        candidates.append(StackState.load(registered_homes()[port]))
    for state in candidates:
        if state is not None and state.ports.get("api") == port and ours(state, "api") is not None:
            return state
    return None


def read_token(state: StackState) -> str:
    try:
        return state.token_file.read_text().strip()
    except OSError:
        return ""


def token_for_host(host: str) -> str:
    """The API token of the local stack at ``host`` (readable by the user who started it), else ""."""
    state = stack_for_host(host)
    return "" if state is None else read_token(state)


def running_stack_host(home: Path | None = None) -> str | None:
    """The API address of the local stack in ``home`` (else ``$MAPFLOW_NDIF_HOME``, else the only registered stack
    that runs). None when there is none; `MultipleStacks` when several run and nothing says which."""
    home = home or default_home()
    if home is not None:
        state = StackState.load(Path(home).expanduser())
        return None if state is None or ours(state, "api") is None else state.host
    running = running_stacks()
    if len(running) > 1:
        raise MapflowError(
            f"{len(running)} local NDIF stacks run (API ports {', '.join(map(str, sorted(running)))}): "
            "pass --ndif-host, or set MAPFLOW_NDIF_HOME to the one to use"
        )
    return next(iter(running.values())).host if running else None

"""The local NDIF stack's state file (``stack.json`` in its home folder) and whether its processes still run.

Kept apart from `stack` (which starts and stops the services and talks to the server through the client) so the
client's configuration (`mapflow.remote.config`) can find a running local server without importing the operator.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_FILE = "stack.json"


def default_home() -> Path:
    return Path(os.environ.get("MAPFLOW_NDIF_HOME") or "~/.cache/mapflow/ndif").expanduser()


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

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    def save(self) -> None:
        Path(self.home, STATE_FILE).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, home: Path) -> StackState | None:
        file = Path(home, STATE_FILE)
        if not file.is_file():
            return None
        return cls(**json.loads(file.read_text()))


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


def running_stack_host(home: Path | None = None) -> str | None:
    """The local stack's API address when ``mapflow ndif up`` left one running."""
    state = StackState.load(Path(home or default_home()).expanduser())
    if state is None or ours(state, "api") is None:
        return None
    return state.host

"""The local NDIF stacks' state, as the operator writes it: the readers live with the client
(`mapflow.remote.local_stacks`, re-exported here), and `register` / `unregister` keep the per-user by-port index that
lets a client find a stack by its API port.
"""

from __future__ import annotations

from pathlib import Path

from ..remote.local_stacks import (  # noqa: F401  (re-exported: the operator's view of the state)
    DEFAULT_BIND,
    STATE_FILE,
    TOKEN_FILE,
    StackState,
    _alive,
    _index_dir,
    _port_of,
    _start_ticks,
    client_address,
    default_home,
    ours,
    read_token,
    registered_homes,
    running_stack_host,
    running_stacks,
    stack_for_host,
    stacks_root,
    token_for_host,
)


def register(state: StackState) -> None:
    """Link the stack's home under its API port (replacing a stale link of a stack that is gone)."""
    index = _index_dir()
    index.mkdir(parents=True, exist_ok=True)
    link = index / str(state.ports["api"])
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(Path(state.home).resolve())


def unregister(state: StackState) -> None:
    link = _index_dir() / str(state.ports.get("api", ""))
    try:
        if link.is_symlink() and link.resolve() == Path(state.home).resolve():
            link.unlink()
    except OSError:
        pass

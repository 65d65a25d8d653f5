"""Ctrl-C and SIGTERM during a run: stop cleanly (store repaired, lock released) and say how to resume."""

from __future__ import annotations

import functools
import signal
import threading
from contextlib import contextmanager
from pathlib import Path


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM; every committed sample stays in the store."""

    def __init__(self, store: Path, kept: int, how: str = "interrupted") -> None:
        super().__init__(f"{how}; {kept} sample(s) kept in {store}; rerun the same command to resume")
        self.store, self.kept = store, kept


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so `finally` blocks run (the default action would skip them)."""


def interrupted_message(err: KeyboardInterrupt) -> str:
    if isinstance(err, Interrupted):
        return str(err)
    return "interrupted; rerun the same command to resume"


@contextmanager
def sigterm_raises():
    """While inside, SIGTERM raises `Terminated` in the main thread (elsewhere signals cannot be handled)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated("terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stops_cleanly(run):
    """Decorate a function that opens result stores for writing: whatever way it ends, those stores are closed
    (their locks released); Ctrl-C or SIGTERM becomes `Interrupted`, naming the store and the samples kept."""

    @functools.wraps(run)
    def wrapper(*args, **kwargs):
        from ..results.store import writers_opened

        with sigterm_raises(), writers_opened() as writers:
            try:
                return run(*args, **kwargs)
            except KeyboardInterrupt as err:  # the sample in flight was rolled back by the store
                if not writers or isinstance(err, Interrupted):
                    raise
                how = "terminated" if isinstance(err, Terminated) else "interrupted"
                raise Interrupted(writers[-1].path, writers[-1].committed_count, how) from None
            finally:
                for store in writers:
                    store.close()

    return wrapper

"""Gather the sample requests of several threads into one request (``--remote-batch``).

A sample request has a fixed cost (the client serializing the shipped functions, the server's queue and unpickling)
that can exceed a small model's compute. With samples in flight on worker threads (`mapflow.analysis.inflight`), each
thread hands its sample's work to a `Batcher`; the thread that fills a batch, or whose short wait runs out (fewer
samples left than the batch holds), sends the whole batch and every thread gets its own sample's outcome back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

LINGER_S = 0.2  # how long a sample waits for others to join its batch (a partial last batch waits this long)


class _Slot:
    def __init__(self, item):
        self.item = item
        self.taken = False
        self.done = threading.Event()
        self.outcome = None


class Batcher:
    """``submit(item)`` returns ``send([items])[i]`` for its item, raising it when it is an exception; an exception
    ``send`` raises itself fails every item of that batch."""

    def __init__(self, size: int, send: Callable[[Sequence], Sequence], linger_s: float = LINGER_S):
        if size < 1:
            raise ValueError(f"batch size must be at least 1, got {size}")
        self.size, self.send, self.linger_s = size, send, linger_s
        self._cond = threading.Condition()
        self._pending: list[_Slot] = []

    def submit(self, item):
        slot = _Slot(item)
        with self._cond:
            self._pending.append(slot)
            deadline = time.monotonic() + self.linger_s
            while not slot.taken and len(self._pending) < self.size and time.monotonic() < deadline:
                self._cond.wait(max(0.0, deadline - time.monotonic()))
            batch = None if slot.taken else self._take()
        if batch is not None:
            self._dispatch(batch)
        slot.done.wait()
        if isinstance(slot.outcome, BaseException):
            raise slot.outcome
        return slot.outcome

    def _take(self) -> list[_Slot]:
        batch, self._pending = self._pending[: self.size], self._pending[self.size :]
        for slot in batch:
            slot.taken = True
        self._cond.notify_all()
        return batch

    def _dispatch(self, batch: list[_Slot]) -> None:
        try:
            outcomes = list(self.send([slot.item for slot in batch]))
            if len(outcomes) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} samples came back with {len(outcomes)} results")
        except BaseException as err:  # noqa: BLE001 - handed to every sample of the batch, re-raised in its thread
            outcomes = [err] * len(batch)
        for slot, outcome in zip(batch, outcomes):
            slot.outcome = outcome
            slot.done.set()

"""Keep up to N samples in flight (remote requests wait on a server, not on this CPU) and hand their outcomes back in
input order, so the store's order does not depend on which request finished first."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def in_order(
    items: Iterable[T],
    measure: Callable[[T], R],
    concurrency: int = 1,
    *,
    catch: tuple[type[BaseException], ...] = (Exception,),
    cancel: Callable[[], None] | None = None,
) -> Iterator[tuple[T, R | BaseException]]:
    """Yield ``(item, measure(item))`` in the order of ``items``, or ``(item, error)`` when it raised one of
    ``catch``; any other exception propagates at its item's turn.

    With ``concurrency`` 1 each item is measured when its turn comes (no threads). Otherwise up to ``concurrency``
    items run at once on worker threads. When the consumer stops early (an error it re-raises, Ctrl-C, ``break``),
    items not started are dropped and ``cancel`` is called to make the running ones give up (e.g. stop polling).
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    items = list(items)
    if concurrency == 1:
        for item in items:
            yield item, _outcome(measure, item, catch)
        return
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="mapflow-sample")
    futures = []
    try:
        for item in items:  # the pool queues the rest: at most `concurrency` run at once
            futures.append(pool.submit(_outcome, measure, item, catch))
        for item, future in zip(items, futures):
            yield item, future.result()
    finally:
        unfinished = [f for f in futures if not f.done()]
        for future in unfinished:
            future.cancel()
        if unfinished and cancel is not None:
            cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _outcome(measure, item, catch):
    try:
        return measure(item)
    except catch as err:
        return err

"""Samples in flight: outcomes in input order, at most N at once, errors per item, early stop cancels the rest."""

import threading
import time

import pytest

from mapflow.analysis.inflight import in_order


def measure_with_tracking(delays):
    active, peak, started, lock = [0], [0], [], threading.Lock()

    def measure(item):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            started.append(item)
        time.sleep(delays[item])
        with lock:
            active[0] -= 1
        if item == 2:
            raise ValueError("item 2 is bad")
        return item * 10

    return measure, peak, started


@pytest.mark.parametrize("concurrency", [1, 2, 3])
def test_outcomes_come_in_input_order_whatever_finishes_first(concurrency):
    delays = {0: 0.15, 1: 0.0, 2: 0.05, 3: 0.0, 4: 0.1}  # later items finish first
    measure, peak, _ = measure_with_tracking(delays)
    outcomes = list(in_order(range(5), measure, concurrency, catch=(ValueError,)))
    assert [item for item, _ in outcomes] == [0, 1, 2, 3, 4]
    assert [r for _, r in outcomes if not isinstance(r, BaseException)] == [0, 10, 30, 40]
    assert isinstance(outcomes[2][1], ValueError) and "item 2" in str(outcomes[2][1])
    assert peak[0] == concurrency  # never more in flight than asked, and that many when there is work


def test_an_uncaught_error_propagates_at_its_turn():
    measure, _, _ = measure_with_tracking({i: 0.0 for i in range(4)})
    seen = []
    with pytest.raises(ValueError):
        for item, _result in in_order(range(4), measure, 2, catch=(KeyError,)):
            seen.append(item)
    assert seen == [0, 1]


def test_stopping_early_cancels_the_rest():
    delays = {i: 0.2 for i in range(10)}
    measure, _, started = measure_with_tracking(delays)
    cancelled = []
    outcomes = in_order(range(10), measure, 2, catch=(ValueError,), cancel=lambda: cancelled.append(True))
    for item, _ in outcomes:
        if item == 0:
            break  # the consumer stops (an error it re-raises, Ctrl-C)
    outcomes.close()
    assert cancelled == [True] and len(started) <= 4  # the queued items never started


def test_concurrency_must_be_positive():
    with pytest.raises(ValueError, match="concurrency"):
        list(in_order([1], lambda x: x, 0))

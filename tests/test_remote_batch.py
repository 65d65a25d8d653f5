"""`mapflow.remote.batch.Batcher`: samples on worker threads gathered into batches, each getting its own outcome."""

import threading
import time

import pytest

from mapflow.analysis.inflight import in_order
from mapflow.errors import MapflowError
from mapflow.remote.batch import Batcher
from mapflow.remote.settings import RemoteSettings


def recording_send(calls, fail_on=None):
    lock = threading.Lock()

    def send(items):
        with lock:
            calls.append(list(items))
        return [ValueError(f"bad {i}") if i == fail_on else i * 10 for i in items]

    return send


def test_full_batches_are_sent_at_once_and_each_item_gets_its_own_result():
    calls = []
    batcher = Batcher(3, recording_send(calls), linger_s=30.0)  # a full batch never waits for the linger
    start = time.monotonic()
    outcomes = list(in_order(range(6), batcher.submit, concurrency=6))
    assert time.monotonic() - start < 10
    assert [o for _, o in outcomes] == [0, 10, 20, 30, 40, 50]
    assert len(calls) == 2 and sorted(i for c in calls for i in c) == list(range(6))
    assert all(len(c) == 3 for c in calls)


def test_a_partial_batch_goes_after_the_linger():
    calls = []
    batcher = Batcher(4, recording_send(calls), linger_s=0.2)
    outcomes = list(in_order(range(5), batcher.submit, concurrency=5))
    assert [o for _, o in outcomes] == [0, 10, 20, 30, 40]
    assert sorted(len(c) for c in calls) == [1, 4]  # ceil(5 / 4) requests


def test_an_item_whose_result_is_an_error_fails_alone():
    calls = []
    batcher = Batcher(3, recording_send(calls, fail_on=1), linger_s=5.0)
    outcomes = dict(in_order(range(3), batcher.submit, concurrency=3))
    assert isinstance(outcomes[1], ValueError) and str(outcomes[1]) == "bad 1"
    assert outcomes[0] == 0 and outcomes[2] == 20 and len(calls) == 1


def test_a_failing_request_fails_every_item_of_its_batch():
    def send(items):
        raise RuntimeError("server gone")

    outcomes = dict(in_order(range(2), Batcher(2, send, linger_s=5.0).submit, concurrency=2))
    assert all(isinstance(o, RuntimeError) and str(o) == "server gone" for o in outcomes.values())


def test_a_send_returning_the_wrong_count_fails_its_batch():
    outcomes = dict(in_order(range(2), Batcher(2, lambda items: [1], linger_s=5.0).submit, concurrency=2))
    assert all("came back with 1 results" in str(o) for o in outcomes.values())


def test_batch_size_is_checked():
    with pytest.raises(ValueError):
        Batcher(0, lambda items: items)
    with pytest.raises(MapflowError, match="remote batch"):
        RemoteSettings(host="http://x", model_key="m", batch=0)
    assert RemoteSettings(host="http://x", model_key="m").describe()["batch"] == 1


def test_batch_comes_from_the_environment_and_the_cli_refuses_it_without_remote(monkeypatch, tmp_path):
    import argparse

    from mapflow.backends import LocalBackend
    from mapflow.cli.remote_options import add_remote_arguments, backend_from_args
    from mapflow.remote.settings import resolve_settings

    empty = tmp_path / "remote.toml"
    empty.write_text("")
    monkeypatch.setenv("MAPFLOW_NDIF_BATCH", "4")
    assert resolve_settings(host="http://x", model="m", config_file=empty).batch == 4
    monkeypatch.setenv("MAPFLOW_NDIF_BATCH", "four")
    with pytest.raises(MapflowError, match="remote batch must be a whole number"):
        resolve_settings(host="http://x", model="m", config_file=empty)
    parser = argparse.ArgumentParser()
    add_remote_arguments(parser)
    with pytest.raises(MapflowError, match="--remote-batch, batch=\\) applies to remote runs"):
        backend_from_args(parser.parse_args(["--remote-batch", "4"]), tmp_path)
    assert isinstance(backend_from_args(parser.parse_args([]), tmp_path), LocalBackend)
    monkeypatch.setenv("MAPFLOW_NDIF_BATCH", "4")
    monkeypatch.setenv("MAPFLOW_REMOTE_CONFIG", str(empty))
    remote = backend_from_args(
        parser.parse_args(["--remote", "--ndif-host", "http://x", "--remote-model", "m"]), tmp_path
    )
    assert remote.settings.batch == 4 and remote.concurrency == 2 * 4  # the environment's batch, the CLI's default
    flag = backend_from_args(
        parser.parse_args(["--remote", "--ndif-host", "http://x", "--remote-model", "m", "--remote-batch", "3"]),
        tmp_path,
    )
    assert flag.settings.batch == 3  # the flag over the environment

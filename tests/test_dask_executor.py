"""A run's shards on Dask workers (`mapflow.scale.dask_executor`): the same dataset as one process, also when a worker
is killed (SIGKILL) in the middle of a shard."""

from __future__ import annotations

import argparse
import os
import re
import signal
import threading
import time

import pytest
import xarray as xr

import mapflow as mf
from mapflow.api import run_options
from mapflow.cli.commands import add_run_arguments
from mapflow.cli.scale_options import add_scale_options, run_settings, run_with_executor
from mapflow.errors import MapflowError
from mapflow.results.integrity import PROVENANCE_KEY
from mapflow.results.shards import shard_store_path
from mapflow.results.store import ResultStore
from mapflow.scale.dask_executor import run_on_dask, start_local_cluster

# two worker processes share the machine's CPUs: keep this file on one xdist worker
pytestmark = pytest.mark.xdist_group("dask")

STUDY = "cross_frame"
SETTINGS = {"window": 3, "limit": 2, "threads": 1}  # 2 samples per task: 10 samples on the organism benchmark
SAMPLES = 10
# provenance that differs between any two runs of one study (when, where, which process) or names the shards
VOLATILE = ("created", "runtime", "shard", "shards")


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "one.zarr"
    return mf.run(STUDY, out=out, progress=False, **SETTINGS).load()


@pytest.fixture(scope="module")
def cluster():
    """Two local worker processes, started once for the file (a worker process imports torch: slow to start)."""
    local = start_local_cluster(2)
    yield local
    local.close()


def test_two_local_workers_give_the_dataset_of_one_run(cluster, single_run, tmp_path):
    run_dir = tmp_path / "run"
    outcome = run_on_dask(STUDY, out=run_dir, scheduler=cluster.scheduler_address, progress=False, **SETTINGS)
    assert outcome.workers == 2 and outcome.shards == 8  # 4 shards per worker
    assert sum(counts["done"] for counts in outcome.shard_counts.values()) == SAMPLES
    assert_same_run(mf.open_dataset(run_dir).load(), single_run)


def test_a_worker_killed_mid_shard_loses_nothing_and_measures_nothing_twice(cluster, single_run, tmp_path):
    run_dir, shards = tmp_path / "run", 3  # 4, 3 and 3 samples: a kill lands inside a shard
    killed: dict = {}

    def kill_a_worker_mid_shard(client):
        pids = client.run(os.getpid)  # worker address -> its process id

        def killer():
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and not killed:
                for address, keys in client.processing().items():
                    for key in keys:
                        index = int(re.match(r"mapflow-shard-(\d+)-of-", key).group(1))
                        stored = _committed(shard_store_path(run_dir, index, shards))
                        if 1 <= stored < len(range(index, SAMPLES, shards)):
                            os.kill(pids[address], signal.SIGKILL)
                            killed.update(shard=index, stored=stored, pid=pids[address])
                            return
                time.sleep(0.05)

        threading.Thread(target=killer, daemon=True).start()

    outcome = run_on_dask(
        STUDY,
        out=run_dir,
        scheduler=cluster.scheduler_address,
        shards=shards,
        progress=False,
        on_cluster=kill_a_worker_mid_shard,
        **SETTINGS,
    )
    assert killed, "no worker was killed mid-shard (the run finished first)"
    with pytest.raises(ProcessLookupError):
        os.kill(killed["pid"], 0)
    # the killed shard ran again and resumed its store: what it had stored was skipped, not measured again
    assert outcome.shard_counts[killed["shard"]]["skipped"] >= killed["stored"]
    assert_same_run(mf.open_dataset(run_dir).load(), single_run)


def assert_same_run(merged: xr.Dataset, single: xr.Dataset) -> None:
    """Data, coordinates and sample order identical; the attributes too, provenance but for `VOLATILE`."""
    xr.testing.assert_identical(merged.drop_attrs(), single.drop_attrs())

    def stable(attrs: dict) -> dict:
        provenance = {key: value for key, value in attrs[PROVENANCE_KEY].items() if key not in VOLATILE}
        return {**attrs, PROVENANCE_KEY: provenance}

    assert stable(merged.attrs) == stable(single.attrs)


def _committed(store) -> int:
    try:
        return ResultStore(store).committed_count
    except (MapflowError, OSError, ValueError):  # not created yet
        return 0


def test_run_options_become_the_settings_of_one_run_and_contradictions_are_refused():
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    add_scale_options(parser)
    args = parser.parse_args([STUDY, "--out", "runs/x", "--workers", "2", "--window", "3", "--option", "k=v"])
    settings = run_settings(args)
    assert set(settings) <= set(run_options())
    assert settings["window"] == 3 and settings["options"] == {"k": "v"} and settings["threads"] == 1
    assert run_with_executor(parser.parse_args([STUDY, "--out", "runs/x"])) is None  # no Dask: runs in this process
    for contradiction in (["--shard", "0/2"], ["--scheduler", "tcp://h:8786"], ["--remote"], ["--overwrite"]):
        with pytest.raises(MapflowError):
            run_with_executor(parser.parse_args([STUDY, "--out", "runs/x", "--workers", "2", *contradiction]))

"""Shards: a run split over processes (`mapflow run --shard I/N`), merged into what one process would have stored.

Every run here is the embedded organism on the embedded benchmark with one sample per task (5 samples), each shard
in its own process, as a SLURM array job would start them. A fast study (cross_frame, window 3) for the identity of
the merge; a study that only reads the prompt's length, and that can be made to hang at a chosen sample, for the
kill, the refusals and the states `mapflow show` reports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr

import mapflow as mf
from mapflow.analysis.shards import Shard, parse_shard, select_shard
from mapflow.cli.commands import main as mapflow_main
from mapflow.errors import MapflowError
from mapflow.results.integrity import COMMITTED_KEY, PROVENANCE_KEY
from mapflow.results.shards import run_status, shard_store_path
from mapflow.results.store import open_dataset, verify_store

pytestmark = pytest.mark.xdist_group("shards")  # the module's runs are shared by its tests

FLOW_RUN = ["cross_frame", "--layers", "2-5", "--limit", "1", "--no-progress"]  # one knockout window: fast
# provenance that differs between any two runs of the same study (when, where, which process), or names the shards
VOLATILE = ("created", "runtime", "shard", "shards")

PROMPT_LENGTH_STUDY = """
import os
import time

import xarray as xr


def run(ctx):
    if ctx.sample.sample_id == os.environ.get("HANG_AT_SAMPLE"):
        time.sleep(600)  # killed here by the test
    return xr.Dataset({"prompt_tokens": ((), ctx.prepared.layout.seq_len)})
"""


def start(args, **env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mapflow", "run", *args],
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-2000:]
    return out


def mapflow_cli(capsys, *args) -> tuple[int, str]:
    code = mapflow_main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def without_volatile(provenance: dict) -> dict:
    return {key: value for key, value in provenance.items() if key not in VOLATILE}


def assert_same_run(merged: xr.Dataset, single: xr.Dataset) -> None:
    """Data, coordinates, sample order and the study's attrs identical; provenance equal but for `VOLATILE`."""
    xr.testing.assert_identical(merged.drop_attrs(), single.drop_attrs())
    keep = set(single.attrs) - {PROVENANCE_KEY}
    assert {key: merged.attrs[key] for key in keep} == {key: single.attrs[key] for key in keep}
    assert without_volatile(merged.attrs[PROVENANCE_KEY]) == without_volatile(single.attrs[PROVENANCE_KEY])


def committed(store: Path) -> int:
    try:
        return json.loads((store / ".zattrs").read_text())[COMMITTED_KEY]
    except (FileNotFoundError, ValueError, KeyError):
        return 0


# --- the partition -------------------------------------------------------------------------------------------


def test_the_partition_is_round_robin_balanced_and_covers_every_sample_once():
    samples = [f"s{i}" for i in range(11)]
    parts = [select_shard(samples, Shard(index, 4)) for index in range(4)]
    assert sorted(sum(parts, [])) == sorted(samples)  # every sample in exactly one shard
    assert {len(part) for part in parts} <= {2, 3}  # sizes differ by at most one
    assert parts[1] == ["s1", "s5", "s9"]  # sample k -> shard k mod N, in run order
    assert select_shard(samples, Shard(1, 4)) == parts[1]  # the same whenever asked


@pytest.mark.parametrize("text", ["3/3", "-1/3", "0/0", "1", "a/b"])
def test_a_shard_that_cannot_be_is_one_line(text):
    with pytest.raises(MapflowError) as err:
        parse_shard(text)
    assert "\n" not in str(err.value) and text.split("/")[0] in str(err.value)
    assert parse_shard("2/3") == Shard(2, 3)


def test_the_cli_refuses_an_index_outside_the_count_before_loading_anything(tmp_path, capsys):
    code, text = mapflow_cli(capsys, "run", *FLOW_RUN, "--out", str(tmp_path / "run"), "--shard", "3/3")
    assert code == 2
    assert "0-based, 0..2 for 3 shards" in text and "--array=0-2" in text
    assert not (tmp_path / "run").exists()


# --- three shards in three processes = one process ------------------------------------------------------------


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory):
    """cross_frame split over 3 shard processes, and the same run in this one process meanwhile (as `mapflow run`
    would: the same options, one thread)."""
    root = tmp_path_factory.mktemp("flow")
    run, single = root / "run", root / "single.zarr"
    processes = [start([*FLOW_RUN, "--out", str(run), "--shard", f"{i}/3"]) for i in range(3)]
    mf.run("cross_frame", out=single, layers="2-5", limit=1, threads=1, progress=False)
    for process in processes:
        finish(process)
    return run, single


@pytest.mark.slow
def test_three_shard_processes_merge_to_the_single_process_run(flow_run, tmp_path, capsys):
    run, single = flow_run
    one = open_dataset(single)
    assert one.sizes["sample"] == 5
    assert_same_run(mf.open_dataset(run), one)  # opening a run directory merges (lazily)
    code, text = mapflow_cli(capsys, "verify", str(run))  # each shard store, as `verify_store` checks one
    assert code == 0 and text.count("ok: every committed sample is present once") == 3

    code, text = mapflow_cli(capsys, "merge", str(run), "--out", str(tmp_path / "merged.zarr"))
    assert code == 0 and "merged 5 sample(s) of 3 shard(s)" in text
    merged = open_dataset(tmp_path / "merged.zarr")
    assert_same_run(merged, one)
    assert verify_store(tmp_path / "merged.zarr").ok
    section = merged.attrs[PROVENANCE_KEY]["shards"]
    assert section["count"] == 3 and not section["partial"]
    assert [member["index"] for member in section["members"]] == [0, 1, 2]
    for index in range(3):  # each shard records which part it is, and the whole run's sample list
        own = open_dataset(shard_store_path(run, index, 3)).attrs[PROVENANCE_KEY]["shard"]
        assert (own["index"], own["count"], own["run_samples"]) == (index, 3, list(one.sample.values))
        assert own["run_sha256"] == section["run_sha256"]
        assert verify_store(shard_store_path(run, index, 3)).ok


# --- a shard killed, refused, missing; show and merge --partial ------------------------------------------------


@pytest.mark.slow
def test_a_killed_shard_resumes_another_config_is_refused_and_merge_says_what_is_missing(tmp_path, capsys):
    study = tmp_path / "prompt_length.py"
    study.write_text(PROMPT_LENGTH_STUDY)
    run, single = tmp_path / "run", tmp_path / "single.zarr"
    base = [str(study), "--limit", "1", "--no-progress"]
    sample_ids = [sample.sample_id for sample in mf.load_benchmark(limit=1)]
    shard0 = shard_store_path(run, 0, 2)  # samples 0, 2, 4 of the run: it hangs at its second one

    hanging = start([*base, "--out", str(run), "--shard", "0/2"], HANG_AT_SAMPLE=sample_ids[2])
    mf.run(str(study), out=single, limit=1, threads=1, progress=False)  # the reference, meanwhile, in this process
    deadline = time.monotonic() + 240
    while committed(shard0) < 1:
        assert hanging.poll() is None, hanging.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "shard 0 never committed its first sample"
        time.sleep(0.1)

    states = {shard.index: shard.state for shard in run_status(run).shards}
    assert states == {0: "in flight", 1: "missing"}
    code, text = mapflow_cli(capsys, "show", str(run))
    assert code == 0 and "shard 0/2  in flight" in text and "shard 1/2  missing" in text

    os.kill(hanging.pid, signal.SIGKILL)
    hanging.wait()
    code, text = mapflow_cli(capsys, "show", str(run))
    assert "shard 0/2  stale" in text and "1/3 samples stored" in text and "shard 1/2  missing" in text
    code, text = mapflow_cli(capsys, "merge", str(run))
    assert code == 2
    assert "missing: shard(s) 1" in text and "stale: shard(s) 0" in text and "--partial" in text
    code, text = mapflow_cli(capsys, "merge", str(run), "--partial", "--out", str(tmp_path / "part.zarr"))
    assert code == 0 and "(partial)" in text
    part = open_dataset(tmp_path / "part.zarr")
    assert list(part.sample.values) == [sample_ids[0]] and part.attrs[PROVENANCE_KEY]["shards"]["partial"]

    # at once: a sibling made with another setting (refused, naming both shards and the setting), the killed
    # shard rerun alone (it resumes: its first sample is not measured again) and the missing one
    other = start([*base, "--frames", "4", "--out", str(run), "--shard", "1/2"])
    resumed = start([*base, "--out", str(run), "--shard", "0/2"])
    missing = start([*base, "--out", str(run), "--shard", "1/2"])
    out, err = other.communicate(timeout=300)
    assert other.returncode == 2
    assert "shard 1/2 refused" in err and "sibling shard 0/2" in err and "num_frames" in err
    assert "2 sample(s) measured, 1 already in the store" in finish(resumed)
    finish(missing)

    assert {shard.state for shard in run_status(run).shards} == {"done"}
    code, text = mapflow_cli(capsys, "show", str(run))
    assert "complete" in text
    code, text = mapflow_cli(capsys, "merge", str(run), "--out", str(tmp_path / "merged.zarr"))
    assert code == 0
    assert_same_run(open_dataset(tmp_path / "merged.zarr"), open_dataset(single))
    assert verify_store(tmp_path / "merged.zarr").ok and verify_store(shard0).ok

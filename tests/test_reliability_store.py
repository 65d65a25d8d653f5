"""Stores are never corrupted or silently mixed: readers never write, one writer at a time (stale locks taken over),
resume refuses changed inputs, `mapflow verify` finds and repairs damage, Ctrl-C / disk full give a sentence."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from test_results import PROVENANCE, expected_results, fill_store, make_sample, sample_id, start_appender

import mapflow.results.store
from mapflow.cli import main
from mapflow.errors import MapflowError
from mapflow.results.integrity import inspect_store
from mapflow.results.store import ResultStore, open_dataset, verify_store
from mapflow.results.store_lock import StoreLock, StoreLocked, lock_path

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN = ["--window", "3", "--samples", "all", "--no-progress", "--threads", "1"]

# information_flow, but before measuring its n-th sample (n >= GATE_AFTER, counted in this process) it waits for the
# file GATE to exist: the test decides when the writer is mid-run.
GATED_STUDY = '''
"""information_flow behind a gate file (tests only)."""
import os, time
from pathlib import Path
from mapflow.studies.information_flow import FLOWS

measured = []

def run(ctx):
    if len(measured) >= int(os.environ.get("GATE_AFTER", "0")):
        deadline = time.monotonic() + 120
        while not Path(os.environ["GATE"]).exists():
            if time.monotonic() > deadline:
                raise TimeoutError("gate never opened")
            time.sleep(0.02)
    measured.append(ctx.sample.sample_id)
    return ctx.sweep(FLOWS)
'''


@pytest.fixture
def gated(tmp_path):
    study = tmp_path / "gated.py"
    study.write_text(textwrap.dedent(GATED_STUDY))
    return study


def cli_args(model, bench, out, study):
    return ["run", str(study), "--model", str(model), "--data", str(bench), "--out", str(out), *RUN]


def start_writer(args, gate: Path, gate_after=0) -> subprocess.Popen:
    env = {**os.environ, "GATE": str(gate), "GATE_AFTER": str(gate_after), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "mapflow", *args],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, process, what, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"writer ended before {what}: {process.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def committed(out: Path) -> int:
    try:
        return ResultStore(out).committed_count
    except MapflowError:
        return -1  # not created yet


def snapshot(path: Path) -> dict:
    """Every file of the store with its bytes and mtime: a reader must leave all of it as it was."""
    return {
        str(p.relative_to(path)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(path.rglob("*")) if p.is_file()
    }


def read_everything(out: Path) -> None:
    """What readers do: `mapflow show`, `mapflow verify`, the library's reader and loader."""
    assert main(["show", str(out)]) == 0
    assert main(["verify", str(out)]) == 0
    store = ResultStore(out)
    assert len(store.completed_sample_ids()) == store.committed_count
    open_dataset(out).load()


# --- one writer at a time, readers never write -------------------------------------------------------------------


def test_second_writer_refused_and_readers_leave_a_live_run_intact(
    tiny_model_dir, tiny_benchmark, gated, tmp_path, capsys
):
    out, gate = tmp_path / "live.zarr", tmp_path / "gate"
    args = cli_args(tiny_model_dir, tiny_benchmark, out, gated)
    writer = start_writer(args, gate, gate_after=1)
    try:
        wait_for(lambda: committed(out) == 1, writer, "the first sample")
        # mid-run (the writer holds the store, waiting before its second sample): a second writer is refused at once
        started = time.monotonic()
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "being written by another run" in err and str(out) in err and f"pid {writer.pid}" in err
        assert time.monotonic() - started < 60
        # readers change nothing, not even an mtime
        before = snapshot(out)
        read_everything(out)
        assert snapshot(out) == before
        capsys.readouterr()
        gate.touch()
        seen = []
        while writer.poll() is None:  # readers keep reading while the writer appends
            store = ResultStore(out)
            seen.append(store.committed_count)
            assert len(store.completed_sample_ids()) == seen[-1]
            assert open_dataset(out).sizes.get("sample", 0) <= 4  # opens whole at any moment
            assert inspect_store(out).ok
        _, stderr = writer.communicate(timeout=120)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert writer.returncode == 0, stderr[-3000:]
    assert seen and min(seen) >= 1
    ds = open_dataset(out)
    assert ds.sizes["sample"] == len(set(ds.sample.values.tolist())) == 4
    assert np.isfinite(ds.rel_change.values).all()
    assert verify_store(out).ok
    assert not lock_path(out).exists()  # released on a normal exit


def test_two_writers_in_one_process_and_the_lock_released_on_close(tmp_path):
    path = tmp_path / "run.zarr"
    with fill_store(path, range(2)):
        with pytest.raises(StoreLocked, match=f"{path}.*pid {os.getpid()}"):
            ResultStore.create_or_resume(path, PROVENANCE)
        with pytest.raises(StoreLocked):
            ResultStore.create_or_resume(path, PROVENANCE, overwrite=True)  # never delete a store being written
        with pytest.raises(StoreLocked):
            verify_store(path, repair=True)
        assert lock_path(path).is_file()
    assert not lock_path(path).exists()
    with pytest.raises(MapflowError, match="read-only"):
        ResultStore(path).append(make_sample(2))
    with ResultStore.create_or_resume(path, PROVENANCE) as store:
        store.append(make_sample(2))
    # two runs starting together: whoever locks first creates the store, the other is refused, nothing half-made
    fresh = tmp_path / "fresh.zarr"
    first = StoreLock.acquire(fresh)
    with pytest.raises(StoreLocked, match=str(fresh)):
        ResultStore.create_or_resume(fresh, PROVENANCE)
    assert not fresh.exists()
    first.release()
    ResultStore.create_or_resume(fresh, PROVENANCE).close()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    path = tmp_path / "run.zarr"
    fill_store(path, range(2)).close()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path(path).write_text(
        json.dumps(
            {"pid": dead.pid, "host": socket.gethostname(), "started": "earlier", "command": "mapflow run cross_frame"}
        )
    )
    with caplog.at_level("WARNING"):
        with ResultStore.create_or_resume(path, PROVENANCE) as store:
            store.append(make_sample(2))
    assert "taking over a stale lock" in caplog.text and f"pid {dead.pid}" in caplog.text
    assert not lock_path(path).exists()
    xr.testing.assert_equal(open_dataset(path).load(), expected_results(3))
    # a writer killed for real (SIGKILL between its append and the commit) leaves its lock behind
    caplog.clear()
    killed = start_appender(tmp_path, path, count=6, crash_point="before_commit", crash_at=4)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL and json.loads(lock_path(path).read_text())["pid"] == killed.pid
    with caplog.at_level("WARNING"):
        with ResultStore.create_or_resume(path, PROVENANCE) as store:
            assert store.committed_count == 4
            store.append(make_sample(4))
    assert f"pid {killed.pid}" in caplog.text
    xr.testing.assert_equal(open_dataset(path).load(), expected_results(5))


@pytest.mark.slow  # a second model-loading subprocess
def test_ctrl_c_and_sigterm_say_what_was_kept_and_release_the_lock(
    tiny_model_dir, tiny_benchmark, gated, tmp_path, capsys, monkeypatch
):
    out, gate = tmp_path / "stopped.zarr", tmp_path / "gate"
    args = cli_args(tiny_model_dir, tiny_benchmark, out, gated)
    writer = start_writer(args, gate, gate_after=2)
    wait_for(lambda: committed(out) == 2, writer, "2 samples")
    time.sleep(0.2)  # into the gate's wait
    writer.send_signal(signal.SIGINT)
    _, stderr = writer.communicate(timeout=60)
    assert writer.returncode == 130, stderr[-3000:]
    assert f"interrupted; 2 sample(s) kept in {out}; rerun the same command to resume" in stderr
    assert "Traceback" not in stderr
    assert not lock_path(out).exists()
    # SIGTERM (here sent by the study to its own process) ends the same way: rolled back, unlocked, one sentence
    terminating = tmp_path / "sigterm" / "gated.py"  # the same study name: the config must match to resume
    terminating.parent.mkdir()
    terminating.write_text(
        textwrap.dedent("""
        import os, signal
        from studies.information_flow import run as measure
        def run(ctx):
            os.kill(os.getpid(), signal.SIGTERM)
            return measure(ctx)
    """)
    )
    monkeypatch.chdir(REPO_ROOT)
    assert main(cli_args(tiny_model_dir, tiny_benchmark, out, terminating)) == 130
    assert f"terminated; 2 sample(s) kept in {out}" in capsys.readouterr().err
    assert not lock_path(out).exists()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the run's handler is gone again
    gate.touch()
    monkeypatch.setenv("GATE", str(gate))
    assert main(args) == 0
    assert "2 sample(s) measured, 2 already in the store" in capsys.readouterr().out
    assert verify_store(out).ok and open_dataset(out).sizes["sample"] == 4


def test_readers_never_write_even_with_an_unfinished_append_or_a_read_only_disk(tmp_path, monkeypatch):
    path = tmp_path / "run.zarr"
    store = fill_store(path, range(3))
    # a writer killed mid-append: arrays one sample longer than the commit, a leftover temporary file
    mapflow.results.store._write_arrays(
        mapflow.results.store._prepare_for_store(make_sample(3)).assign_attrs(store._attrs()), path, first=False
    )
    (path / "rel_change" / f"0.0.0.{'a' * 32}.partial").write_bytes(b"half")
    store.close()
    before = snapshot(path)

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    with monkeypatch.context() as read_only:  # every way zarr or mapflow could write
        for target, name in [
            (zarr.storage._local, "_put"),
            (os, "replace"),
            (os, "rename"),
            (os, "unlink"),
            (shutil, "rmtree"),
            (os, "mkdir"),
        ]:
            read_only.setattr(target, name, refuse)
        read_everything(path)
        assert verify_store(path).notes  # the unfinished append is noticed, not repaired
        assert ResultStore(path).completed_sample_ids() == {sample_id(i) for i in range(3)}
    assert snapshot(path) == before
    with ResultStore.create_or_resume(path, PROVENANCE) as writer:  # the writer repairs
        writer.append(make_sample(3))
    xr.testing.assert_equal(open_dataset(path).load(), expected_results(4))


# --- resume refuses other inputs ---------------------------------------------------------------------------------


def test_resume_refuses_a_swapped_checkpoint_or_annotation_file(tiny_model_dir, tiny_benchmark, tmp_path, capsys):
    model, bench = tmp_path / "model", tmp_path / "bench"
    shutil.copytree(tiny_model_dir, model)
    shutil.copytree(tiny_benchmark, bench)
    out = tmp_path / "out.zarr"
    args = ["run", "cross_frame", "--model", str(model), "--data", str(bench), "--out", str(out), "--limit", "1", *RUN]
    assert main(args) == 0
    capsys.readouterr()
    before = snapshot(out)
    weights = sorted(model.glob("*.safetensors"))[0]
    original = weights.read_bytes()
    weights.write_bytes(original[:-4] + bytes([original[-4] ^ 1]) + original[-3:])  # another checkpoint, same place
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "the model weights" in err and f"{weights.name} changed" in err
    weights.write_bytes(original)
    annotations = bench / "json" / "moving_direction.json"
    text = annotations.read_bytes()
    annotations.write_bytes(text + b"\n")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "the annotation files" in err and "json/moving_direction.json changed" in err
    assert snapshot(out) == before  # nothing was appended
    annotations.write_bytes(text)
    assert main(args) == 0
    assert "0 sample(s) measured, 2 already in the store" in capsys.readouterr().out


# --- verify and repair -------------------------------------------------------------------------------------------


def test_verify_finds_and_repairs_damage_and_the_rerun_measures_only_the_damaged(
    tiny_model_dir, tiny_benchmark, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(mapflow.results.store, "SAMPLE_CHUNK", 2)  # 4 samples in 2 chunks: damage one, keep the other
    out = tmp_path / "out.zarr"
    args = cli_args(tiny_model_dir, tiny_benchmark, out, "information_flow")
    assert main(args) == 0
    whole = open_dataset(out).load()
    ids = whole.sample.values.tolist()
    capsys.readouterr()

    (out / "rel_change" / "1.0.0").unlink()  # read back as all-NaN without a check
    assert main(["verify", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "DAMAGED: 2 sample(s)" in printed and "chunk rel_change/1.0.0 is missing" in printed
    assert ids[2] in printed and ids[3] in printed and ids[0] not in printed
    assert main(["verify", str(out), "--repair"]) == 0
    assert "dropped 2 damaged sample(s)" in capsys.readouterr().out
    assert main(["verify", str(out)]) == 0 and "ok:" in capsys.readouterr().out
    assert main(args) == 0
    assert "2 sample(s) measured, 2 already in the store" in capsys.readouterr().out
    xr.testing.assert_equal(open_dataset(out).load().sel(sample=ids), whole)

    # a resumed run verifies by itself: a garbled chunk, then lost sample ids
    (out / "p_knockout" / "0.0.0").write_bytes(b"garbage")
    assert main(args) == 0
    assert "2 sample(s) measured, 2 already in the store" in capsys.readouterr().out
    (out / "sample" / "1").unlink()
    assert main(args) == 0
    assert "2 sample(s) measured, 2 already in the store" in capsys.readouterr().out
    final = open_dataset(out).load()
    assert sorted(final.sample.values.tolist()) == sorted(ids)
    xr.testing.assert_equal(final.sel(sample=ids), whole)
    assert verify_store(out).ok


def test_garbage_metadata_gives_a_sentence_naming_the_file(tmp_path, capsys):
    path = tmp_path / "run.zarr"
    fill_store(path, range(2)).close()
    (path / ".zmetadata").write_text("{not json")
    assert main(["show", str(path)]) == 2
    assert ".zmetadata is damaged" in capsys.readouterr().err
    assert verify_store(path, repair=True).ok  # rebuilt from the arrays
    xr.testing.assert_equal(open_dataset(path).load(), expected_results(2))
    (path / ".zattrs").write_text("\x00garbage")
    for command in (["show", str(path)], ["verify", str(path)], ["plot", str(path)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"{path / '.zattrs'} is damaged" in err and "not valid JSON" in err
    assert main(["verify", str(path), "--repair"]) == 0  # the consolidated metadata holds a copy
    xr.testing.assert_equal(open_dataset(path).load(), expected_results(2))
    assert ResultStore(path).committed_count == 2


def test_disk_full_is_one_sentence_and_the_store_resumes(tmp_path, monkeypatch):
    path = tmp_path / "run.zarr"
    store = fill_store(path, range(2))
    real_put, calls = zarr.storage._local._put, []

    def put_until_full(target, value, exclusive=False):
        calls.append(target)
        if len(calls) > 2:  # a few files of the append got through
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_put(target, value, exclusive)

    with monkeypatch.context() as full:
        full.setattr(zarr.storage._local, "_put", put_until_full)
        with pytest.raises(
            MapflowError,
            match=f"disk full while writing to {path} \\(.* free there\\): 2 committed "
            "sample\\(s\\) kept, .*; free some space and rerun the same command to "
            "resume",
        ):
            store.append(make_sample(2))
    store.close()
    with ResultStore.create_or_resume(path, PROVENANCE) as resumed:
        assert resumed.committed_count == 2
        resumed.append(make_sample(2))
    xr.testing.assert_equal(open_dataset(path).load(), expected_results(3))
    assert verify_store(path).ok

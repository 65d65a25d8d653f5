"""ResultStore: round trips, resume, refusals, failures, and repair after a kill at any moment."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from mapflow.errors import MapflowError
from mapflow.results.store import COMMITTED_KEY, SAMPLE_DIM, ResultStore, open_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
FLOWS = ["video->question", "question->last", "video->last"]
TASKS = ["moving_direction", "action_count", "egocentric_sequence"]  # different lengths on purpose
PROVENANCE = {"config": {"model": "tiny", "window": 3, "flows": FLOWS, "dtype": "float32"}, "git": "abc123"}


def sample_id(index: int) -> str:
    # Slashes, non-ASCII and growing lengths: strings must stay variable-length.
    return f"{TASKS[index % 3]}/{index:04d}" + "é" * (index % 4)


def make_sample(index: int, n_layers: int = 5, flows: list[str] = FLOWS) -> xr.Dataset:
    """A study result for one sample, as the runner hands it to the store."""
    rng = np.random.default_rng(index)
    shape = (len(flows), n_layers)
    correct = index % 4 != 3
    nan_unless_correct = 1.0 if correct else np.nan  # wrong answers are not knocked out
    layers = np.arange(n_layers)
    ds = xr.Dataset(
        {
            "p_knockout": (("flow", "layer"), rng.random(shape) * nan_unless_correct),
            "rel_change": (("flow", "layer"), rng.normal(-20, 10, shape) * nan_unless_correct),
            "p_gt_knockout": (("flow", "layer"), rng.random(shape) * nan_unless_correct),
            "rel_change_gt": (("flow", "layer"), rng.normal(-5, 3, shape) * nan_unless_correct),
            "pred_knockout": (("flow", "layer"), rng.integers(0, 32000, shape, dtype=np.int64)),
            "p_base": ((), rng.random()),
            "p_gt_base": ((), rng.random()),
            "pred_base": ((), np.int64(rng.integers(0, 32000))),
            "correct": ((), correct),
        },
        coords={
            "flow": flows,
            "layer": layers,
            "window_start": ("layer", np.maximum(layers - 1, 0)),
            "window_end": ("layer", np.minimum(layers + 2, n_layers)),
            "window": 3,
        },
    )
    ds = ds.expand_dims(SAMPLE_DIM)
    return ds.assign_coords({SAMPLE_DIM: [sample_id(index)], "task": (SAMPLE_DIM, [TASKS[index % 3]])})


def expected_results(count: int) -> xr.Dataset:
    return xr.concat([make_sample(i) for i in range(count)], dim=SAMPLE_DIM)


def assert_same_results(actual: xr.Dataset, expected: xr.Dataset) -> None:
    actual = actual.load()
    xr.testing.assert_equal(actual, expected)
    assert set(actual.coords) == set(expected.coords)
    assert set(actual.data_vars) == set(expected.data_vars)
    for name, variable in expected.variables.items():
        if variable.dtype.kind in "UO":
            assert actual[name].values.tolist() == variable.values.tolist(), name
        else:
            assert actual[name].dtype == variable.dtype, name


def fill_store(path: Path, indices: range) -> ResultStore:
    store = ResultStore.create_or_resume(path, PROVENANCE)
    for index in indices:
        store.append(make_sample(index))
    return store


def raw_sample_lengths(path: Path) -> dict[str, int]:
    """Sample-axis length of every array as written on disk (not the consolidated view)."""
    group = zarr.open_group(path, mode="r", zarr_format=2, use_consolidated=False)
    lengths = {}
    for name, array in group.arrays():
        dims = list(array.attrs.get("_ARRAY_DIMENSIONS", []))
        if SAMPLE_DIM in dims:
            lengths[name] = array.shape[dims.index(SAMPLE_DIM)]
    return lengths


def test_round_trip_equals_concat(tmp_path):
    path = tmp_path / "run.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fill_store(path, range(7))
        result = open_dataset(path)
    assert_same_results(result, expected_results(7))
    assert result.attrs["provenance"] == PROVENANCE
    assert np.isnan(result.rel_change.sel({SAMPLE_DIM: sample_id(3)})).all()


def test_open_dataset_gives_numpy_backed_arrays_even_with_dask_installed(tmp_path):
    """The figure code indexes with boolean masks, which dask arrays refuse: a store opens the same way whether or not
    dask (the scale extra) is installed. The check is only meaningful where dask is installed, as in the test extra."""
    pytest.importorskip("dask")
    path = tmp_path / "run.zarr"
    fill_store(path, range(3))
    ds = open_dataset(path)
    assert dict(ds.chunks) == {}, "open_dataset returned dask arrays"
    mean = ds.rel_change.mean(SAMPLE_DIM)
    assert mean.where(mean == mean.min(), drop=True).size >= 1  # the report's strongest-cell lookup
    assert dict(xr.open_zarr(path).chunks), "plain open_zarr should give dask arrays here (the case guarded against)"


def test_plain_open_zarr_slices_without_extra_code(tmp_path):
    path = tmp_path / "run.zarr"
    fill_store(path, range(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(path)
        selected = ds.rel_change.sel(layer=3, flow="video->question").values
    expected = expected_results(4).rel_change.sel(layer=3, flow="video->question").values
    np.testing.assert_array_equal(selected, expected)
    assert ds["task"].values.tolist() == [TASKS[i % 3] for i in range(4)]


def test_resume_continues_to_the_uninterrupted_dataset(tmp_path):
    path = tmp_path / "run.zarr"
    fill_store(path, range(3))
    store = ResultStore.create_or_resume(path, PROVENANCE)
    assert store.completed_sample_ids() == {sample_id(i) for i in range(3)}
    for index in range(3, 6):
        store.append(make_sample(index))
    assert_same_results(open_dataset(path), expected_results(6))


def test_duplicate_sample_is_refused(tmp_path):
    path = tmp_path / "run.zarr"
    store = fill_store(path, range(2))
    with pytest.raises(MapflowError, match="already stored"):
        store.append(make_sample(1))
    store.close()  # one writer at a time
    with pytest.raises(MapflowError, match="already stored"):
        ResultStore.create_or_resume(path, PROVENANCE).append(make_sample(0))
    assert_same_results(open_dataset(path), expected_results(2))


@pytest.mark.parametrize(
    "mismatch, message",
    [
        (make_sample(5, n_layers=4), "non-sample dims"),
        (make_sample(5, flows=["a->b", "c->d", "e->f"]), "'flow' has values"),
        (make_sample(5).drop_vars("p_gt_base"), "'p_gt_base' is missing"),
        (make_sample(5).assign(extra=make_sample(5).p_base), "'extra' is not in the store"),
        (make_sample(5).assign(pred_base=make_sample(5).pred_base.astype(float)), "'pred_base' has dtype"),
    ],
)
def test_result_with_other_dims_or_coords_is_refused(tmp_path, mismatch, message):
    store = fill_store(tmp_path / "run.zarr", range(2))
    with pytest.raises(MapflowError, match=message):
        store.append(mismatch)
    assert store.committed_count == 2


def test_config_mismatch_is_refused_with_the_differing_keys(tmp_path):
    path = tmp_path / "run.zarr"
    fill_store(path, range(1))
    other = {**PROVENANCE, "config": {**PROVENANCE["config"], "window": 5, "seed": 1}}
    with pytest.raises(MapflowError, match=r"window, seed|seed, window") as error:
        ResultStore.create_or_resume(path, other)
    assert "--overwrite" in str(error.value) and "--out" in str(error.value)
    # Provenance outside `config` (git commit, time) may change between runs.
    ResultStore.create_or_resume(path, {**PROVENANCE, "git": "def456"})


def test_existing_store_without_resume_needs_overwrite(tmp_path):
    path = tmp_path / "run.zarr"
    fill_store(path, range(2))
    with pytest.raises(MapflowError, match="--overwrite"):
        ResultStore.create_or_resume(path, PROVENANCE, resume=False)
    other = {"config": {"model": "other"}}
    store = ResultStore.create_or_resume(path, other, resume=False, overwrite=True)
    assert store.committed_count == 0 and store.provenance == other
    assert open_dataset(path).sizes.get(SAMPLE_DIM, 0) == 0


def test_overwrite_refuses_a_directory_that_is_not_a_store(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(MapflowError, match="not a zarr store"):
        ResultStore.create_or_resume(tmp_path, PROVENANCE, overwrite=True)
    assert (tmp_path / "notes.txt").exists()


def test_failures_persist_and_a_later_success_clears_them(tmp_path):
    path = tmp_path / "run.zarr"
    store = fill_store(path, range(2))
    store.record_failure(sample_id(2), TASKS[2], "CUDA out of memory")
    store.record_failure(sample_id(3), TASKS[0], "video unreadable")
    store.close()
    resumed = ResultStore.create_or_resume(path, PROVENANCE)
    assert resumed.failed_samples() == {
        sample_id(2): {"task": TASKS[2], "reason": "CUDA out of memory"},
        sample_id(3): {"task": TASKS[0], "reason": "video unreadable"},
    }
    resumed.append(make_sample(2))
    with pytest.raises(MapflowError, match="already stored"):
        resumed.record_failure(sample_id(0), TASKS[0], "late")
    resumed.close()
    assert set(ResultStore.create_or_resume(path, PROVENANCE).failed_samples()) == {sample_id(3)}


def test_exception_between_two_variable_writes_rolls_back(tmp_path, monkeypatch):
    path = tmp_path / "run.zarr"
    store = fill_store(path, range(3))
    real_resize = zarr.Array.resize
    calls = []

    def resize_failing_second_time(self, *args, **kwargs):
        calls.append(self.path)
        if len(calls) == 2:  # the first variable is already resized and written
            raise OSError("disk full")
        return real_resize(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(zarr.Array, "resize", resize_failing_second_time)
        with pytest.raises(OSError, match="disk full"):
            store.append(make_sample(3))
    assert set(raw_sample_lengths(path).values()) == {3}
    assert store.committed_count == 3
    for index in range(3, 5):
        store.append(make_sample(index))
    assert_same_results(open_dataset(path), expected_results(5))


# --- kills: a separate process appends and dies with SIGKILL --------------------------------

APPEND_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    sys.path[:0] = [{repo!r}, {tests!r}]
    import zarr
    from mapflow.results.store import ResultStore
    from test_results import PROVENANCE, make_sample, sample_id

    path, count, crash_point, crash_at = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    def die_on_second_resize():
        real_resize, calls = zarr.Array.resize, []
        def resize(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                die()
            return real_resize(self, *args, **kwargs)
        zarr.Array.resize = resize

    hooks = {{
        "second_resize": die_on_second_resize,  # between two variables' writes
        "before_commit": lambda: setattr(ResultStore, "_commit_attrs", die),
        "before_consolidate": lambda: setattr(zarr, "consolidate_metadata", die),
    }}
    store = ResultStore.create_or_resume(path, PROVENANCE)
    done = store.completed_sample_ids()
    for index in range(count):
        if sample_id(index) in done:
            continue
        if index == crash_at:
            hooks[crash_point]()
        store.append(make_sample(index))
        print(index, flush=True)
    """
).format(repo=str(REPO_ROOT), tests=str(Path(__file__).parent))


def start_appender(tmp_path: Path, store_path: Path, count: int, crash_point="none", crash_at=-1):
    script = tmp_path / "append_loop.py"
    script.write_text(APPEND_SCRIPT)
    command = [sys.executable, str(script), str(store_path), str(count), crash_point, str(crash_at)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_direct_readers_see_a_committed_prefix(path: Path) -> int:
    """Before any repair, plain xarray.open_zarr must show the first k samples exactly."""
    seen = xr.open_zarr(path)
    k = seen.sizes.get(SAMPLE_DIM, 0)
    if k:
        assert_same_results(seen, expected_results(k))
    return k


def assert_repaired_and_continue(path: Path, extra: int = 2) -> None:
    store = ResultStore.create_or_resume(path, PROVENANCE)
    committed = store.committed_count
    reopened = open_dataset(path)
    assert reopened.sizes.get(SAMPLE_DIM, 0) == committed
    assert set(raw_sample_lengths(path).values()) <= {committed}
    assert store.completed_sample_ids() == {sample_id(i) for i in range(committed)}
    total = committed + extra
    for index in range(committed, total):
        store.append(make_sample(index))
    assert_same_results(open_dataset(path), expected_results(total))


@pytest.mark.parametrize(
    "crash_point, crash_at",
    [("second_resize", 3), ("before_commit", 3), ("before_consolidate", 3), ("before_commit", 0)],
)
def test_kill_at_a_chosen_point_is_repaired_on_resume(tmp_path, crash_point, crash_at):
    path = tmp_path / "run.zarr"
    process = start_appender(tmp_path, path, count=6, crash_point=crash_point, crash_at=crash_at)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, stderr

    lengths = set(raw_sample_lengths(path).values())
    committed = int(zarr.open_group(path, mode="r", zarr_format=2, use_consolidated=False).attrs[COMMITTED_KEY])
    visible = assert_direct_readers_see_a_committed_prefix(path)
    if crash_point == "second_resize":
        assert lengths == {3, 4}  # the kill really left arrays of different lengths
        assert committed == visible == 3
    elif crash_point == "before_commit":
        assert lengths == {crash_at + 1} and committed == visible == crash_at
    else:  # committed, but readers still see the previous consolidated shapes
        assert committed == 4 and visible == 3
    assert_repaired_and_continue(path)


def test_kill_at_random_moments_is_repaired_on_resume(tmp_path):
    rng = np.random.default_rng(20240611)
    path = tmp_path / "run.zarr"
    for _ in range(4):  # the same store, killed again and again
        process = start_appender(tmp_path, path, count=10_000)
        process.stdout.readline()  # at least one append finished: the loop is running
        time.sleep(rng.uniform(0.0, 0.3))
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        assert_direct_readers_see_a_committed_prefix(path)
        with ResultStore.create_or_resume(path, PROVENANCE) as store:  # released before the next appender starts
            assert set(raw_sample_lengths(path).values()) <= {store.committed_count}
    assert_repaired_and_continue(path)

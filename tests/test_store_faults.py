"""Store faults: damaged store-level metadata, a committed count that does not match the data, a bad failures list,
and a full disk (simulated at zarr's one low-level file write, so every write after the disk fills fails)."""

from __future__ import annotations

import errno
import json
import warnings
from pathlib import Path

import pytest
import xarray as xr
import zarr
from test_results import PROVENANCE, expected_results, fill_store, make_sample, sample_id

import mapflow.results.store_lock
from mapflow.cli import main
from mapflow.errors import MapflowError
from mapflow.results.integrity import COMMITTED_KEY, FAILURES_KEY, StoreDamaged, inspect_store
from mapflow.results.store import ResultStore, open_dataset, verify_store


def plain_xarray_samples(path: Path) -> int:
    """What a reader outside mapflow sees: `xarray.open_zarr` with its defaults."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no consolidated metadata: xarray says it reads the arrays
        return xr.open_zarr(path).sizes.get("sample", 0)


def assert_one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


# --- damaged store-level metadata -------------------------------------------------------------------------------


@pytest.mark.parametrize("damaged", [".zgroup", ".zmetadata"])
def test_verify_finds_damaged_store_metadata_and_the_repair_rebuilds_it(tmp_path, capsys, damaged):
    path = tmp_path / "run.zarr"
    fill_store(path, range(2)).close()
    (path / damaged).write_text("{not json")
    assert main(["verify", str(path)]) == 1
    assert f"{path / damaged} is damaged" in capsys.readouterr().out
    assert main(["show", str(path)]) == 2
    assert_one_line_error(capsys, f"{path / damaged} is damaged", f"mapflow verify {path} --repair")
    assert main(["verify", str(path), "--repair"]) == 0
    assert "rebuilt" in capsys.readouterr().out
    assert inspect_store(path).ok
    xr.testing.assert_equal(open_dataset(path).load(), expected_results(2))
    assert plain_xarray_samples(path) == 2


@pytest.mark.parametrize("damaged", ["p_base/.zarray", "rel_change/.zattrs", "sample/.zarray"])
def test_damaged_array_metadata_is_found_and_restored_without_losing_a_sample(tmp_path, capsys, damaged):
    path = tmp_path / "run.zarr"
    fill_store(path, range(3)).close()
    (path / damaged).write_text("{not json")
    assert main(["verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path / damaged} is damaged" in out and "DAMAGED: 3 sample(s)" in out
    with ResultStore.create_or_resume(path, PROVENANCE) as resumed:  # the consolidated metadata holds a copy
        assert f"restored {path / damaged}" in resumed.verify_report.describe()
        assert resumed.committed_count == 3 and not resumed.verify_report.repaired
        resumed.append(make_sample(3))
    xr.testing.assert_equal(open_dataset(path).load(), expected_results(4))
    assert inspect_store(path).ok


def test_resume_of_a_store_with_a_damaged_group_file_is_one_sentence_naming_it(tmp_path):
    path = tmp_path / "run.zarr"
    fill_store(path, range(2)).close()
    (path / ".zgroup").write_bytes(b"\x00garbage")
    with pytest.raises(StoreDamaged, match=f"{path / '.zgroup'} is damaged .*`mapflow verify {path} --repair`"):
        ResultStore.create_or_resume(path, PROVENANCE)
    verify_store(path, repair=True)
    with ResultStore.create_or_resume(path, PROVENANCE) as resumed:
        resumed.append(make_sample(2))
    xr.testing.assert_equal(open_dataset(path).load(), expected_results(3))


def test_stale_or_missing_consolidated_metadata_never_changes_what_mapflow_readers_see(tmp_path):
    path = tmp_path / "run.zarr"
    fill_store(path, range(2)).close()
    stale = (path / ".zmetadata").read_bytes()
    with ResultStore.create_or_resume(path, PROVENANCE) as store:
        store.append(make_sample(2))
    (path / ".zmetadata").write_bytes(stale)  # the count committed, the consolidation not yet
    assert ResultStore(path).committed_count == 3
    xr.testing.assert_equal(open_dataset(path).load(), expected_results(3))
    report = inspect_store(path)
    assert report.ok and any("consolidated metadata shows 2" in note for note in report.notes)
    (path / ".zmetadata").unlink()
    xr.testing.assert_equal(open_dataset(path).load(), expected_results(3))
    assert inspect_store(path).ok
    verify_store(path, repair=True)  # consolidated again (3 samples)
    edit_root_attrs(path, **{COMMITTED_KEY: 2})  # as while a writer drops a damaged last sample: the count goes first
    xr.testing.assert_equal(open_dataset(path).load(), expected_results(2))


# --- the committed count against the data ------------------------------------------------------------------------


def edit_root_attrs(path: Path, **changes) -> None:
    attrs = json.loads((path / ".zattrs").read_text())
    attrs.update(changes)
    (path / ".zattrs").write_text(json.dumps(attrs))


def test_a_committed_count_beyond_the_data_is_reported_as_a_wrong_count(tmp_path, capsys):
    path = tmp_path / "run.zarr"
    fill_store(path, range(3)).close()
    edit_root_attrs(path, **{COMMITTED_KEY: 999})
    report = inspect_store(path)
    assert not report.ok and not report.damaged  # no sample is damaged: the count is wrong
    assert main(["verify", str(path)]) == 1
    out = capsys.readouterr().out
    assert "says 999 committed samples but the arrays hold 3" in out and "DAMAGED" not in out
    assert main(["show", str(path)]) == 2
    assert_one_line_error(capsys, "999", "hold 3")
    with ResultStore.create_or_resume(path, PROVENANCE) as resumed:
        assert resumed.committed_count == 3
        described = resumed.verify_report.describe()
        assert "committed count corrected from 999 to 3" in described and "dropped" not in described
        resumed.append(make_sample(3))
    xr.testing.assert_equal(open_dataset(path).load(), expected_results(4))
    assert inspect_store(path).ok


@pytest.mark.parametrize(
    "failures, entry",
    [
        ([1], None),
        ({sample_id(5): "boom"}, sample_id(5)),
        ({sample_id(5): {"task": "moving_direction"}}, sample_id(5)),
    ],
)
def test_a_bad_failures_list_names_the_failures_key(tmp_path, capsys, failures, entry):
    path = tmp_path / "run.zarr"
    fill_store(path, range(2)).close()
    edit_root_attrs(path, **{FAILURES_KEY: failures})
    with pytest.raises(StoreDamaged) as raised:
        ResultStore(path).failed_samples()
    message = str(raised.value)
    assert f"'{FAILURES_KEY}'" in message and COMMITTED_KEY not in message
    assert entry is None or f"'{entry}'" in message
    assert main(["show", str(path)]) == 2
    assert_one_line_error(capsys, f"'{FAILURES_KEY}'")


# --- disk full ---------------------------------------------------------------------------------------------------


class FullDisk:
    """From the moment `fills(target, data)` first holds, every file write fails with ENOSPC, as on a full disk:
    zarr's local store writes each file through ``_put``, the store's lock through ``_write``."""

    def __init__(self, monkeypatch, fills=lambda target, data: True) -> None:
        self.full = False
        real_put = zarr.storage._local._put

        def put(target, value, exclusive=False):
            self.full = self.full or fills(Path(target), value.to_bytes())
            if self.full:
                raise OSError(errno.ENOSPC, "No space left on device", str(target))
            return real_put(target, value, exclusive)

        def write_lock(fd, holder):
            if self.full:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(fd, holder)

        real_write = mapflow.results.store_lock._write
        monkeypatch.setattr(zarr.storage._local, "_put", put)
        monkeypatch.setattr(mapflow.results.store_lock, "_write", write_lock)


def root_count_in(data: bytes) -> int | None:
    try:
        return json.loads(data).get(COMMITTED_KEY)
    except (ValueError, AttributeError):
        return None


FILLS_AT = {  # the moments of an append of the second sample where the disk can fill up
    "data": lambda path: lambda target, data: target.parent.parent == path and not target.name.startswith("."),
    "count": lambda path: lambda target, data: target == path / ".zattrs" and root_count_in(data) == 2,
    "consolidation": lambda path: lambda target, data: target == path / ".zmetadata",
}


@pytest.mark.parametrize("moment, kept", [("data", 1), ("count", 1), ("consolidation", 2)])
def test_disk_full_during_an_append_reports_exactly_what_every_reader_sees(tmp_path, monkeypatch, moment, kept):
    path = tmp_path / "run.zarr"
    store = fill_store(path, range(1))
    with monkeypatch.context() as patch:
        disk = FullDisk(patch, FILLS_AT[moment](path))
        with pytest.raises(MapflowError) as raised:
            store.append(make_sample(1))
        assert disk.full
        message = str(raised.value)
        assert "\n" not in message and f"disk full while writing to {path}" in message and " free there" in message
        assert f"{kept} committed sample(s) kept" in message
        assert f"sample {sample_id(1)} was {'' if kept == 2 else 'not '}stored" in message
        # every reader agrees with the message while the disk is still full
        assert ResultStore(path).committed_count == kept
        assert open_dataset(path).sizes["sample"] == kept
        assert plain_xarray_samples(path) == kept
        xr.testing.assert_equal(open_dataset(path).load(), expected_results(kept))
    store.close()
    with ResultStore.create_or_resume(path, PROVENANCE) as resumed:  # space freed: the run goes on
        assert resumed.committed_count == kept
        for index in range(kept, 3):
            resumed.append(make_sample(index))
    xr.testing.assert_equal(open_dataset(path).load(), expected_results(3))
    assert inspect_store(path).ok


def test_a_retry_while_the_disk_is_still_full_is_one_sentence_and_keeps_the_samples(tmp_path, monkeypatch, capsys):
    path = tmp_path / "run.zarr"
    fill_store(path, range(2)).close()
    before = {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    with monkeypatch.context() as patch:
        FullDisk(patch)
        with pytest.raises(
            MapflowError,
            match=f"disk full while opening {path} for writing \\(.* free there\\): "
            "its 2 committed sample\\(s\\) are kept; free some space",
        ):
            ResultStore.create_or_resume(path, PROVENANCE)
        assert main(["verify", str(path), "--repair"]) == 2
        assert_one_line_error(capsys, f"disk full while opening {path} for writing", "2 committed sample(s)")
        fresh = tmp_path / "new.zarr"
        with pytest.raises(MapflowError, match=f"disk full while creating {fresh} .*: nothing was stored"):
            ResultStore.create_or_resume(fresh, PROVENANCE)
        assert not fresh.exists() and not list(tmp_path.glob("new.zarr.creating-*"))
    assert {p: p.read_bytes() for p in path.rglob("*") if p.is_file()} == before
    xr.testing.assert_equal(open_dataset(path).load(), expected_results(2))

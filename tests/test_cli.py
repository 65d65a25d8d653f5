"""The command line end to end: run, resume after a hard kill, failing samples, plot."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from mapflow.cli import main

RUN = ["--window", "3", "--samples", "all", "--no-progress", "--threads", "1"]


def run_cli(tiny_model_dir, bench, out, study="information_flow", extra=()):
    return main(["run", study, "--model", str(tiny_model_dir), "--data", str(bench), "--out", str(out), *RUN, *extra])


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, tiny_benchmark, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "flow.zarr"
    assert run_cli(tiny_model_dir, tiny_benchmark, out) == 0
    return out


def test_run_writes_a_labelled_store(finished_run, tiny_model_dir):
    ds = xr.open_zarr(finished_run)
    assert {"sample", "flow", "layer"} <= set(ds.dims)
    assert ds.sizes["sample"] == 4
    assert set(ds.flow.values) == {"video->question", "video->last", "question->last", "last->last"}
    assert set(ds.task.values) == {"moving_direction", "scene_transition"}
    one = ds.rel_change.sel(layer=1, flow="video->question")
    assert one.dims == ("sample",) and np.isfinite(one.values).all()
    for name in ("p_base", "p_knockout", "rel_change", "correct"):
        assert name in ds
    prov = ds.attrs["provenance"]
    assert prov["study"] == "information_flow"
    assert len(prov["model"]["weights_hash"]) == 64
    assert prov["versions"]["nnsight"] == "0.8.1" and prov["versions"]["transformers"].startswith("5.24")
    assert prov["config"]["window"] == 3 and prov["seed"] == 42
    assert str(ds.model.values) == tiny_model_dir.name


def test_rerun_skips_finished_samples(finished_run, tiny_model_dir, tiny_benchmark, capsys):
    before = xr.open_zarr(finished_run).load()
    assert run_cli(tiny_model_dir, tiny_benchmark, finished_run) == 0
    assert "0 sample(s) measured, 4 already in the store" in capsys.readouterr().out
    xr.testing.assert_identical(before, xr.open_zarr(finished_run).load())


def test_plot_draws_a_png(finished_run, tmp_path):
    png = tmp_path / "fig.png"
    assert main(["plot", str(finished_run), "--png", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


KILLER_STUDY = '''
"""information_flow, but the process SIGKILLs itself on the sample named in MAPFLOW_TEST_KILL_AT."""
import os, signal
from mapflow.studies.information_flow import FLOWS

def run(ctx):
    if ctx.sample.sample_id == os.environ.get("MAPFLOW_TEST_KILL_AT"):
        os.kill(os.getpid(), signal.SIGKILL)
    return ctx.sweep(FLOWS)
'''


def test_kill_and_resume_equals_an_uninterrupted_run(tiny_model_dir, tiny_benchmark, tmp_path):
    study = tmp_path / "killer.py"
    study.write_text(textwrap.dedent(KILLER_STUDY))
    whole, resumed = tmp_path / "whole.zarr", tmp_path / "resumed.zarr"
    assert run_cli(tiny_model_dir, tiny_benchmark, whole, study=str(study)) == 0
    third = str(xr.open_zarr(whole).sample.values[2])
    command = [
        sys.executable,
        "-m",
        "mapflow",
        "run",
        str(study),
        "--model",
        str(tiny_model_dir),
        "--data",
        str(tiny_benchmark),
        "--out",
        str(resumed),
        *RUN,
    ]
    killed = subprocess.run(
        command,
        env={**os.environ, "MAPFLOW_TEST_KILL_AT": third},
        capture_output=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert xr.open_zarr(resumed).sizes["sample"] == 2
    assert run_cli(tiny_model_dir, tiny_benchmark, resumed, study=str(study)) == 0
    a, b = xr.open_zarr(whole).load(), xr.open_zarr(resumed).load()
    xr.testing.assert_equal(a, b)
    assert len(set(b.sample.values.tolist())) == b.sizes["sample"] == 4


def test_a_broken_video_is_recorded_and_the_run_goes_on(tiny_model_dir, tiny_benchmark, tmp_path):
    bench = tmp_path / "bench"
    shutil.copytree(tiny_benchmark, bench)
    victim = sorted((bench / "video" / "scene_transition").iterdir())[0]
    victim.write_bytes(b"")
    out = tmp_path / "out.zarr"
    assert run_cli(tiny_model_dir, bench, out, study="cross_frame") == 0
    from mapflow.results.store import ResultStore

    ds = xr.open_zarr(out)
    assert ds.sizes["sample"] == 3
    failures = ResultStore(out).failed_samples()
    ((failed_id, info),) = failures.items()
    assert failed_id.startswith("scene_transition/") and victim.name in info["reason"]


def test_bad_input_gives_a_clear_error(tmp_path, tiny_benchmark, capsys):
    assert main(["run", "no_such_study", "--out", str(tmp_path / "x.zarr")]) == 2
    err = capsys.readouterr().err
    assert "no study named" in err and "cross_frame" in err and "information_flow" in err
    assert (
        main(
            [
                "run",
                "cross_frame",
                "--model",
                str(tmp_path / "missing"),
                "--data",
                str(tiny_benchmark),
                "--out",
                str(tmp_path / "y.zarr"),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_accuracy_command_reports_tasks_and_averages(tiny_model_dir, tiny_benchmark, tmp_path, capsys):
    out = tmp_path / "acc.zarr"
    assert (
        main(
            [
                "accuracy",
                "--model",
                str(tiny_model_dir),
                "--data",
                str(tiny_benchmark),
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    for name in ("moving_direction", "scene_transition", "micro", "macro"):
        assert name in printed
    ds = xr.open_zarr(out)
    from mapflow.results.metrics import accuracy_by_task

    table = accuracy_by_task(ds.correct)
    assert table["micro"] == pytest.approx(100 * float(ds.correct.mean()))
    assert table["macro"] == pytest.approx(np.mean([table["moving_direction"], table["scene_transition"]]))


@pytest.mark.parametrize("study,output", [("progressive", ".png"), ("cross_frame_halves", ".csv")])
def test_plot_draws_the_studys_own_figure_or_table(tiny_model_dir, tiny_benchmark, tmp_path, study, output, capsys):
    store = tmp_path / f"{study}.zarr"
    assert run_cli(tiny_model_dir, tiny_benchmark, store, study=study, extra=["--limit", "1"]) == 0
    assert main(["plot", str(store)]) == 0
    written = store.with_suffix(output)
    assert written.is_file() and written.stat().st_size > 100
    if output == ".png":
        assert store.with_suffix(".pdf").is_file()
    else:
        assert "first_half_acc" in capsys.readouterr().out


def test_option_flag_needs_key_and_value(tiny_model_dir, tiny_benchmark, tmp_path, capsys):
    code = run_cli(
        tiny_model_dir, tiny_benchmark, tmp_path / "x.zarr", study="window_sizes", extra=["--option", "sizes"]
    )
    assert code == 2
    assert "KEY=VALUE" in capsys.readouterr().err

"""`import mapflow as mf`: the public API resolves a run as the CLI does, runs notebook functions, and says what is
wrong with bad input."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import mapflow as mf
from mapflow.analysis.context import StudyConfig
from mapflow.cli import main
from mapflow.errors import MapflowError, StudyError
from mapflow.studies.information_flow import FLOWS

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {"window": 3, "samples": "all"}


def information_flow_in_a_notebook(ctx):
    """The shipped study written as a plain function, as one would in a notebook."""
    return ctx.sweep(FLOWS)


@pytest.fixture(scope="module")
def cli_store(tiny_model_dir, tiny_benchmark, tmp_path_factory):
    out = tmp_path_factory.mktemp("library") / "flow.zarr"
    assert (
        main(
            [
                "run",
                "information_flow",
                "--model",
                str(tiny_model_dir),
                "--data",
                str(tiny_benchmark),
                "--out",
                str(out),
                "--window",
                "3",
                "--samples",
                "all",
                "--threads",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def tiny_data(tiny_benchmark):
    return mf.load_benchmark("tvbench", tiny_benchmark)


def test_import_is_lazy_and_keeps_the_version():
    code = (
        "import sys, mapflow; print(mapflow.__version__, 'torch' in sys.modules, 'xarray' in sys.modules, "
        "callable(mapflow.run), 'run' in dir(mapflow))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.split() == ["0.1.0", "False", "False", "True", "True"]


def test_python_dash_m_is_the_command_line():
    out = subprocess.run([sys.executable, "-m", "mapflow", "studies"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "cross_frame" in out.stdout and "logit_lens" in out.stdout


def test_a_store_written_by_the_cli_resumes_through_mf_run(cli_store, tiny_model_dir, tiny_benchmark):
    """Same resolution (template, defaults, provenance): the CLI's store is accepted as this configuration's and
    nothing is recomputed."""
    before = xr.open_zarr(cli_store).load()
    ds = mf.run("information_flow", tiny_model_dir, tiny_benchmark, out=cli_store, progress=False, **SETTINGS)
    xr.testing.assert_identical(before, ds.load())
    assert ds.attrs["provenance"]["config"]["prompt_template"] == "llava_mcqa"


def test_a_notebook_function_gives_the_shipped_studys_numbers(cli_store, sdpa_adapter, tiny_data):
    ds = mf.run(information_flow_in_a_notebook, sdpa_adapter, tiny_data, progress=False, **SETTINGS)
    stored = xr.open_zarr(cli_store).load()
    assert ds.attrs["provenance"]["study"] == "information_flow_in_a_notebook"
    assert list(ds.sample.values) == list(stored.sample.values) and ds.knocked_out.values.all()
    for name in stored.data_vars:
        np.testing.assert_array_equal(ds[name].values, stored[name].values, err_msg=name)


def test_a_checkpoints_own_template_is_the_default_and_another_warns(tiny_model_dir, tiny_data, tmp_path):
    from mapflow.analysis.resolve import resolve_config
    from mapflow.models import load_adapter

    named = tmp_path / "named"
    shutil.copytree(tiny_model_dir, named)
    (named / "mapflow.json").write_text(json.dumps({"prompt_template": "organism_mcqa"}))
    adapter = load_adapter(named, self_test=False)
    assert resolve_config(StudyConfig(), adapter, tiny_data).prompt_template == "organism_mcqa"
    with pytest.warns(UserWarning, match="own template is 'organism_mcqa'"):
        assert (
            resolve_config(StudyConfig(prompt_template="llava_mcqa"), adapter, tiny_data).prompt_template
            == "llava_mcqa"
        )
    plain = load_adapter(tiny_model_dir, self_test=False)  # names none: the benchmark's template, no warning
    assert resolve_config(StudyConfig(), plain, tiny_data).prompt_template == "llava_mcqa"


def returns_a_dict(ctx):
    return {"value": 1.0}


def test_a_study_returning_no_dataset_stops_naming_itself(sdpa_adapter, tiny_data):
    with pytest.raises(StudyError, match="returns_a_dict returned dict, not an xarray.Dataset"):
        mf.run(returns_a_dict, sdpa_adapter, tiny_data, progress=False)


def test_unknown_study_or_setting_and_wrong_data_are_named():
    with pytest.raises(MapflowError, match="no study named 'no_such_study'; available: .*cross_frame"):
        mf.run("no_such_study")
    with pytest.raises(MapflowError, match="unknown run setting.* windw"):
        mf.run("cross_frame", windw=3)


def test_data_that_cannot_fit_the_model_is_refused_before_any_sample(sdpa_adapter, tiny_data):
    with pytest.raises(MapflowError, match="not list"):
        mf.run("cross_frame", sdpa_adapter, list(tiny_data))
    with pytest.raises(MapflowError, match="pass them to load_benchmark"):
        mf.run("cross_frame", sdpa_adapter, tiny_data, limit=1)
    from dataclasses import replace

    from mapflow.analysis.resolve import BenchmarkSamples

    free_form = BenchmarkSamples(
        [replace(tiny_data[0], candidates=(), reference_answer="up")], benchmark="tvbench", root=tiny_data.root
    )
    with pytest.raises(MapflowError, match="'llava_mcqa' asks a multiple-choice question.*free-form"):
        mf.run("cross_frame", sdpa_adapter, free_form)


def test_out_made_with_another_configuration_is_refused_and_kept(cli_store, sdpa_adapter, tiny_data):
    before = xr.open_zarr(cli_store).load()
    with pytest.raises(MapflowError, match="window"):
        mf.run("information_flow", sdpa_adapter, tiny_data, out=cli_store, window=2, samples="all", progress=False)
    xr.testing.assert_identical(before, xr.open_zarr(cli_store).load())


def test_check_reports_what_it_found(sdpa_adapter, tiny_model_dir, capsys, monkeypatch):
    report = mf.check(sdpa_adapter)
    assert report["ok"] and report["family"] == "llava_next_video" and report["layers"] == sdpa_adapter.num_layers
    assert report["empty_knockout_max_abs_diff"] == 0.0 and report["video_to_last_max_abs_diff"] > 0
    assert report["spans"]["video"] == sum(n for name, n in report["spans"].items() if name.startswith("frame_")) > 0
    assert main(["check", str(tiny_model_dir)]) == 0
    printed = capsys.readouterr().out
    assert "llava_next_video" in printed and "empty knockout  exact" in printed
    from mapflow.errors import ModelLoadError
    from mapflow.models.base import VideoLLMAdapter

    def broken(self, prepared):
        raise ModelLoadError("an empty knockout changed the logits by 0.5")

    monkeypatch.setattr(VideoLLMAdapter, "self_test", broken)
    report = mf.check(sdpa_adapter)
    assert not report["ok"] and "0.5" in report["error"]
    assert main(["check", str(tiny_model_dir)]) == 1
    assert "FAILED: an empty knockout changed" in capsys.readouterr().out

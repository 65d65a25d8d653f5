"""What a newcomer hands `mapflow run`: relative and `~` paths, `python -m mapflow`, bad annotation entries, bad
options, and inputs that must fail one sample rather than the run (huge frames, over-long prompts, 30 options)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from mapflow.cli import main
from mapflow.embedded import DEFAULT_DATA_DIR, DEFAULT_MODEL_DIR
from mapflow.results.store import ResultStore

REPO = Path(__file__).resolve().parent.parent
TASKS = ("moving_direction", "scene_transition")
FAST = ["--no-progress", "--threads", "1", "--samples", "all"]


def copy_bench(root: Path, per_task: int = 3) -> Path:
    """The first `per_task` entries of two tasks of the embedded benchmark, with their videos."""
    for task in TASKS:
        entries = json.loads((DEFAULT_DATA_DIR / "json" / f"{task}.json").read_text())[:per_task]
        write_entries(root, task, entries)
        (root / "video" / task).mkdir(parents=True, exist_ok=True)
        for entry in entries:
            shutil.copy(DEFAULT_DATA_DIR / "video" / task / entry["video"], root / "video" / task / entry["video"])
    return root


def write_entries(root: Path, task: str, entries: list) -> None:
    (root / "json").mkdir(parents=True, exist_ok=True)
    (root / "json" / f"{task}.json").write_text(json.dumps(entries, indent=1))


def read_entries(root: Path, task: str) -> list:
    return json.loads((root / "json" / f"{task}.json").read_text())


def run(*args, study="accuracy"):
    return main(["run", study, *map(str, args), *FAST])


def test_relative_paths_from_the_root_and_a_subdirectory_and_home(tmp_path, monkeypatch, capsys):
    work = tmp_path / "my work"  # a space in every path below
    copy_bench(work / "data" / "my bench", per_task=1)
    shutil.copytree(DEFAULT_MODEL_DIR, work / "data" / "models" / "organism")
    (work / "sub").mkdir()
    monkeypatch.chdir(work)
    assert run("--model", "data/models/organism", "--data", "data/my bench", "--out", "out.zarr") == 0
    assert "2 sample(s) measured" in capsys.readouterr().out
    prov = ResultStore(work / "out.zarr").provenance
    assert prov["dataset"]["annotation_files"] == ["json/moving_direction.json", "json/scene_transition.json"]
    assert prov["config"]["data"] == str((work / "data" / "my bench").resolve())

    monkeypatch.chdir(work / "sub")  # the same run from a subdirectory resolves to the same store and config
    assert run("--model", "../data/models/organism", "--data", "../data/my bench", "--out", "../out.zarr") == 0
    assert "0 sample(s) measured, 2 already in the store" in capsys.readouterr().out
    assert not (work / "sub" / "out.zarr").exists()

    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # a quoted '~' reaches mapflow unexpanded
    assert (
        run(
            "--model",
            "~/../my work/data/models/organism",
            "--data",
            "../data/my bench",
            "--out",
            "~/runs/x.zarr",
            "--tasks",
            "scene_transition",
        )
        == 0
    )
    assert (tmp_path / "home" / "runs" / "x.zarr").is_dir() and not (work / "sub" / "~").exists()


ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_python_dash_m_mapflow_is_the_command_line(tmp_path):
    shown = subprocess.run(
        [sys.executable, "-m", "mapflow", "--help"], capture_output=True, text=True, env=ENV, cwd=tmp_path
    )
    assert shown.returncode == 0 and "usage: mapflow" in shown.stdout and "{run," in shown.stdout


@pytest.mark.slow
def test_python_dash_m_mapflow_runs_a_study(tmp_path):
    env = ENV
    bench = copy_bench(tmp_path / "bench", per_task=1)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mapflow",
            "run",
            "accuracy",
            "--data",
            "bench",
            "--out",
            "a.zarr",
            "--tasks",
            "moving_direction",
            *FAST,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 sample(s) measured" in done.stdout and bench.is_dir()
    assert xr.open_zarr(tmp_path / "a.zarr").sizes["sample"] == 1


def make_bad_entries(bench: Path) -> dict[str, str]:
    """Three bad entries among good ones in two files; sample id -> the field the report must name."""
    moving = read_entries(bench, "moving_direction")
    moving[1]["answer"] = "Sideways."
    del moving[2]["question"]
    write_entries(bench, "moving_direction", moving)
    scenes = read_entries(bench, "scene_transition")
    scenes[0]["candidates"] = "From the city to the desert."
    write_entries(bench, "scene_transition", scenes)
    return {
        "moving_direction/0001": "answer",
        "moving_direction/0002": "question",
        "scene_transition/0000": "candidates",
    }


def test_bad_entries_are_all_named_recorded_and_the_rest_measured_once(tmp_path, capsys):
    bench = copy_bench(tmp_path / "bench", per_task=4)
    bad = make_bad_entries(bench)
    out = tmp_path / "out.zarr"
    assert run("--data", bench, "--out", out) == 0
    captured = capsys.readouterr()
    assert "3 bad annotation entries" in captured.err
    for sample_id, field in bad.items():
        task, index = sample_id.split("/")
        line = next(line for line in captured.err.splitlines() if sample_id in line)
        assert f"{task}.json" in line and f"(entry {int(index)})" in line and f"field '{field}'" in line
    assert "5 sample(s) measured, 0 already in the store, 3 failed" in captured.out

    ds = xr.open_zarr(out).load()
    assert sorted(ds.sample.values) == [
        "moving_direction/0000",
        "moving_direction/0003",
        "scene_transition/0001",
        "scene_transition/0002",
        "scene_transition/0003",
    ]
    failures = ResultStore(out).failed_samples()
    assert set(failures) == set(bad)
    assert main(["show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert all(f"failed {sample_id}" in shown for sample_id in bad)

    assert run("--data", bench, "--out", out) == 0  # the same command again measures nothing twice
    assert "0 sample(s) measured, 5 already in the store, 3 failed" in capsys.readouterr().out
    xr.testing.assert_identical(ds, xr.open_zarr(out).load())
    assert ResultStore(out).failed_samples() == failures

    strict = tmp_path / "strict.zarr"
    assert run("--data", bench, "--out", strict, "--strict") == 2
    assert "moving_direction/0001 (entry 1), field 'answer'" in capsys.readouterr().err
    assert not strict.exists()


def test_a_limit_draws_the_same_entries_whether_or_not_some_are_bad(tmp_path, capsys):
    from mapflow.data.loading import collecting_bad_entries
    from mapflow.data.tvbench import load_tvbench

    bench = copy_bench(tmp_path / "bench", per_task=4)
    before = [s.sample_id for s in load_tvbench(bench, limit=2, seed=5)]
    make_bad_entries(bench)
    with collecting_bad_entries() as bad:
        after = [s.sample_id for s in load_tvbench(bench, limit=2, seed=5)]
    assert sorted(after + [b.sample_id for b in bad]) == sorted(before)


@pytest.mark.parametrize(
    "option,valid",
    [
        (["--layers", "5-3"], "0 <= start < stop <= 8"),  # the organism has 8 layers
        (["--layers", "0-20"], "0 <= start < stop <= 8"),
        (["--frames", "0"], "positive number of frames"),
        (["--frames", "100"], "choose --frames <= 17"),  # the embedded videos have 17 frames
        (["--window", "100"], "between 1 and 8"),
        (["--flows", "nonsense->last"], "known spans: "),
        (["--limit", "0"], "positive number of samples"),
    ],
)
def test_each_bad_option_is_refused_before_the_store_exists(tmp_path, capsys, option, valid):
    bench = copy_bench(tmp_path / "bench", per_task=1)
    out = tmp_path / "out.zarr"
    assert run("--data", bench, "--out", out, *option, study="cross_frame") == 2
    err = capsys.readouterr().err
    assert f"mapflow: error: {' '.join(option)}" in err and valid in err and "Traceback" not in err
    assert not out.exists()


def test_a_run_where_every_sample_failed_exits_non_zero(tmp_path, capsys):
    bench = copy_bench(tmp_path / "bench", per_task=1)
    for video in bench.rglob("*.mp4"):
        video.write_bytes(b"")
    assert run("--data", bench, "--out", tmp_path / "out.zarr") == 1
    assert "0 sample(s) measured, 0 already in the store, 2 failed" in capsys.readouterr().out


def test_oversized_video_long_prompt_and_too_many_options_fail_one_sample_each(tmp_path, capsys):
    from mapflow.data.video import MAX_FRAME_PIXELS
    from mapflow.organism.synthetic import write_video

    bench = copy_bench(tmp_path / "bench", per_task=4)
    side = int(np.sqrt(MAX_FRAME_PIXELS)) + 104  # even, and above the budget: 4200 x 4200
    huge = read_entries(bench, "moving_direction")[0]["video"]
    write_video(bench / "video" / "moving_direction" / huge, np.zeros((1, side, side, 3), np.uint8))
    scenes = read_entries(bench, "scene_transition")
    scenes[1]["question"] = "Which way does the scene change? " * 800  # > 4096 tokens, the organism's context
    scenes[2]["candidates"] = [f"Option {i}." for i in range(30)]
    scenes[2]["answer"] = "Option 29."
    write_entries(bench, "scene_transition", scenes)
    out = tmp_path / "out.zarr"
    assert run("--data", bench, "--out", out) == 0
    assert "5 sample(s) measured, 0 already in the store, 3 failed" in capsys.readouterr().out
    failures = ResultStore(out).failed_samples()
    assert f"{side}x{side}" in failures["moving_direction/0000"]["reason"]
    assert "decoding budget" in failures["moving_direction/0000"]["reason"]
    assert "context length of 4096" in failures["scene_transition/0001"]["reason"]
    assert "30 candidates" in failures["scene_transition/0002"]["reason"]
    assert xr.open_zarr(out).sizes["sample"] == 5


STUDY_RAISING = """
def run(ctx):
    if ctx.sample.sample_id.endswith("0000"):
        return 1 / 0
    from mapflow.studies.accuracy import run as accuracy
    return accuracy(ctx)
"""
STUDY_RETURNING_A_DICT = """
def run(ctx):
    return {"p": 1.0}
"""


def test_a_study_error_fails_its_sample_and_a_wrong_return_type_stops_the_run(tmp_path, capsys):
    bench = copy_bench(tmp_path / "bench", per_task=2)
    raising, wrong = tmp_path / "raising.py", tmp_path / "wrong.py"
    raising.write_text(STUDY_RAISING)
    wrong.write_text(STUDY_RETURNING_A_DICT)
    assert run("--data", bench, "--out", tmp_path / "a.zarr", study=str(raising)) == 0
    assert "2 sample(s) measured, 0 already in the store, 2 failed" in capsys.readouterr().out
    failure = ResultStore(tmp_path / "a.zarr").failed_samples()["moving_direction/0000"]
    assert failure["reason"].startswith("ZeroDivisionError")

    assert run("--data", bench, "--out", tmp_path / "b.zarr", study=str(wrong)) == 2
    err = capsys.readouterr().err
    assert "wrong.py" in err and "returned dict" in err and "xarray.Dataset" in err


def test_half_precision_on_cpu_prints_a_note(tmp_path, capsys):
    bench = copy_bench(tmp_path / "bench", per_task=1)
    assert run("--data", bench, "--out", tmp_path / "h.zarr", "--dtype", "bfloat16", "--tasks", "scene_transition") == 0
    err = capsys.readouterr().err
    assert "note: --dtype bfloat16 on CPU" in err and "rel_change" in err


@pytest.mark.parametrize(
    "damage,expected",
    [
        ("truncate", "truncated, empty or not a safetensors file"),
        ("empty", "truncated, empty or not a safetensors file"),
        ("vision_config", "does not match the weights"),
    ],
)
def test_a_damaged_checkpoint_gets_a_sentence(tmp_path, capsys, damage, expected):
    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, model)
    weights = model / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100_000])
    elif damage == "empty":
        weights.write_bytes(b"")
    else:
        config = json.loads((model / "config.json").read_text())
        config["vision_config"].update(hidden_size=32, intermediate_size=64)
        (model / "config.json").write_text(json.dumps(config))
    bench = copy_bench(tmp_path / "bench", per_task=1)
    assert run("--model", model, "--data", bench, "--out", tmp_path / "x.zarr") == 2
    err = capsys.readouterr().err
    assert expected in err and str(model) in err and "Traceback" not in err


def test_dataset_provenance_takes_relative_and_absolute_paths_alike(tmp_path, monkeypatch):
    from mapflow.results.provenance import dataset_provenance

    bench = copy_bench(tmp_path / "my bench", per_task=1)
    monkeypatch.chdir(tmp_path)
    files = sorted(Path("my bench").rglob("*.json"))
    relative = dataset_provenance("my bench", files)
    absolute = dataset_provenance(bench, [f.resolve() for f in files])
    assert relative == absolute and relative["annotation_files"][0] == "json/moving_direction.json"


def test_a_one_file_benchmark_names_a_bad_entry_even_without_its_task(tmp_path):
    from mapflow.data.loading import collecting_bad_entries
    from mapflow.data.longvideobench import load_longvideobench

    good = {
        "question": "What?",
        "candidates": ["a", "b"],
        "correct_choice": 1,
        "video_path": "v.mp4",
        "duration": 10,
        "question_category": "T3O",
        "id": "q1",
    }
    entries = [
        good,
        {**good, "id": "q2", "correct_choice": 5},
        {k: v for k, v in good.items() if k != "question_category"},
    ]
    (tmp_path / "lvb_val.json").write_text(json.dumps(entries))
    with collecting_bad_entries() as bad:
        samples = load_longvideobench(tmp_path)
    assert [s.sample_id for s in samples] == ["T3O/q1"]
    assert {b.sample_id: b.error.field for b in bad} == {"T3O/q2": "correct_choice", "unknown/q1": "question_category"}
    with pytest.raises(Exception, match="correct_choice"):
        load_longvideobench(tmp_path)  # outside the block the first bad entry raises, as before

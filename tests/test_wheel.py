"""The built wheel, installed into a fresh virtual environment, runs studies from any working directory.

The environment reuses this interpreter's installed dependencies (a ``.pth`` line to its site-packages: offline, no
copies) but gets mapflow only from the wheel. The wheel is built from a copy of the source, so the checkout stays
clean.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("mapflow", "studies", "data", "pyproject.toml", "setup.py", "README.md")

# the wheel and its venv (module fixtures) are built once: both tests on one xdist worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("wheel")]


def _run(command, cwd, env=None):
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    pytest.importorskip("setuptools")
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(
            REPO / name,
            source / name,
            **({"ignore": shutil.ignore_patterns("__pycache__", "*.zarr")} if (REPO / name).is_dir() else {}),
        )
    out = tmp_path_factory.mktemp("dist")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(out),
        ],
        cwd=source,
    )
    return next(out.glob("mapflow-*.whl"))


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory):
    root = tmp_path_factory.mktemp("venv") / "env"
    _run([sys.executable, "-m", "venv", "--without-pip", str(root)], cwd=root.parent)
    python = root / "bin" / "python"
    site = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root).strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # appended after the wheel's
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        cwd=root,
    )
    return root


def clean_env():
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")} | {"OMP_NUM_THREADS": "1"}


def test_the_wheel_installs_one_top_level_package_with_studies_and_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"mapflow", wheel.name.split("-py3")[0] + ".dist-info"}
    for shipped in (
        "mapflow/studies/cross_frame.py",
        "mapflow/_data/models/organism-video/model.safetensors",
        "mapflow/_data/temporal-bench/json/object_count.json",
        "mapflow/_data/keywords/paper/spatial.txt",
    ):
        assert shipped in names, shipped


def test_the_installed_package_runs_studies_from_any_directory(venv, tmp_path):
    python, env = venv / "bin" / "python", clean_env()
    code = (
        "import mapflow as mf, mapflow.studies; print(mf.__file__); print(mapflow.studies.__file__); "
        "ds = mf.run('cross_frame', window=3, limit=1, tasks=['object_count'], progress=False); "
        "print(ds.sizes['sample'], float(ds.rel_change.isnull().mean()) < 1)"
    )
    lines = _run([str(python), "-c", code], cwd=tmp_path, env=env).splitlines()
    assert lines[0].startswith(str(venv)) and lines[1].startswith(str(venv)), lines  # not the checkout's copy
    assert lines[-1] == "1 True"
    _run(
        [
            str(venv / "bin" / "mapflow"),
            "run",
            "logit_lens",
            "--limit",
            "1",
            "--tasks",
            "object_count",
            "--out",
            "lens.zarr",
            "--no-progress",
        ],
        cwd=tmp_path,
        env=env,
    )  # its default keyword lists are package data
    out = _run(
        [str(venv / "bin" / "mapflow"), "demo", "--limit", "1", "--only", "cross_frame-video", "--out-dir", "demo"],
        cwd=tmp_path,
        env=env,
    )
    assert "demo results in demo/" in out and (tmp_path / "demo" / "report.html").is_file()

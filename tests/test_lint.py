"""Formatting and lint are habits the tests keep: `make lint` runs the same two commands (configured in
pyproject.toml, [tool.ruff])."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKED = ("mapflow", "studies", "tests", "scripts", "examples")


def ruff(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "ruff", *args]
    if shutil.which("ruff", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("ruff is not installed in this environment: `make install` installs the [test] extra")
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True)


def test_the_code_passes_the_linter():
    result = ruff("check", "--no-cache", *CHECKED)
    assert result.returncode == 0, f"`make lint` finds problems (`ruff check --fix` fixes some):\n{result.stdout}"


def test_the_code_is_formatted():
    result = ruff("format", "--no-cache", "--check", *CHECKED)
    assert result.returncode == 0, f"run `make format`:\n{result.stdout}"


def test_the_linter_can_fail(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("import os\n")  # an unused import
    result = ruff("check", "--no-cache", "--config", str(REPO / "pyproject.toml"), str(planted))
    assert result.returncode == 1 and "F401" in result.stdout

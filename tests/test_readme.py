"""The README's Python blocks run as written (each from its own file, in a scratch directory), except those whose
first lines say ``# needs: …`` (a real checkpoint, a server, a store made by a command above)."""

import re
import runpy
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks():
    text = README.read_text()
    for match in BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        yield pytest.param(
            match.group(1),
            id=f"README.md:{line}",
            marks=[pytest.mark.skip(reason=match.group(1).splitlines()[0])]
            if match.group(1).lstrip().startswith("# needs:")
            else [],
        )


def test_the_readme_has_runnable_python_blocks():
    runnable = [p for p in python_blocks() if not p.marks]
    assert len(runnable) >= 2  # at least "Writing a study" and "From Python"


@pytest.mark.parametrize("code", python_blocks())
def test_readme_block_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "block.py"
    script.write_text(code)  # from a file: nnsight reads a traced block's source
    runpy.run_path(str(script), run_name="__readme__")

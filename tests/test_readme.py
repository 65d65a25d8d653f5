"""The Python blocks of the README and of every page of the documentation site (docs/**/*.md) run as written (each
from its own file, in a scratch directory), except those whose first lines say ``# needs: …`` (a real checkpoint, a
server, a store made by a command above). So no example anywhere rots."""

import re
import runpy
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# a fenced block, also indented inside a list item (the closing fence at the opening fence's indentation)
BLOCK = re.compile(r"^([ \t]*)```python\n(.*?)^\1```", re.S | re.M)


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def python_blocks():
    for document in documents():
        text = document.read_text()
        for match in BLOCK.finditer(text):
            code = textwrap.dedent(match.group(2))
            line = text.count("\n", 0, match.start()) + 1
            needs = code.lstrip().startswith("# needs:")
            yield pytest.param(
                code,
                id=f"{document.relative_to(REPO)}:{line}",
                marks=[pytest.mark.skip(reason=code.lstrip().splitlines()[0])] if needs else [],
            )


def test_the_documents_have_runnable_python_blocks():
    runnable = [p for p in python_blocks() if not p.marks]
    ids = {p.id.split(":")[0] for p in runnable}
    # the README's example, "Writing a study" and "From Python" at least
    assert {"README.md", "docs/writing-a-study.md", "docs/python.md"} <= ids, ids


def test_the_block_pattern_finds_indented_and_plain_blocks():
    text = "x\n```python\na = 1\n```\n- item\n\n    ```python\n    b = 2\n    ```\n```bash\nc\n```\n"
    assert [textwrap.dedent(m.group(2)) for m in BLOCK.finditer(text)] == ["a = 1\n", "b = 2\n"]


@pytest.mark.parametrize("code", python_blocks())
def test_document_block_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "block.py"
    script.write_text(code)  # from a file: nnsight reads a traced block's source
    runpy.run_path(str(script), run_name="__readme__")

"""mkdocs hook: the "Quickstart notebook" page (docs/notebook.md) is rendered from examples/quickstart.ipynb.

Markdown cells are copied as they are and code cells become ```python blocks, read with nbformat: no notebook
plugin, nothing fetched. The repository's copy is stripped of outputs; with ``MAPFLOW_DOCS_RUN_NOTEBOOK=1`` (``make
docs`` sets it) the notebook is first executed on the embedded default (nbclient, about 20 s; the cells tagged
``needs-server`` are shown but not run) and the page shows each cell's printed text, results and figures. A missing
or unreadable notebook, or a cell that fails, stops the build naming the file, so the site never ships a stale copy.
"""

import base64
import os
import tempfile
from pathlib import Path

import nbformat
from mkdocs.exceptions import PluginError

PAGE = "notebook.md"
NOTEBOOK = Path("examples") / "quickstart.ipynb"  # relative to the repository root (mkdocs.yml's folder)
RUN_VARIABLE = "MAPFLOW_DOCS_RUN_NOTEBOOK"
SERVER_TAG = "needs-server"
MAX_TEXT_LINES = 40  # a long printed table is cut, with the count of lines left out


def read_notebook(path: Path):
    try:
        return nbformat.read(path, as_version=4)
    except FileNotFoundError as err:
        raise PluginError(f"{path}: not found (the Quickstart notebook page is rendered from it)") from err
    except Exception as err:  # nbformat raises several kinds for a damaged file
        raise PluginError(f"{path}: not a readable notebook ({type(err).__name__}: {err})") from err


def execute(notebook, path: Path):
    """The notebook run top to bottom in a temporary folder, its server cells left out of the run."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    runnable = nbformat.v4.new_notebook(metadata=notebook.metadata)
    # the same cell objects: nbclient writes the outputs into them, so the shown notebook carries them
    runnable.cells = [c for c in notebook.cells if SERVER_TAG not in c.metadata.get("tags", [])]
    with tempfile.TemporaryDirectory(prefix="mapflow-docs-notebook-") as folder:
        client = NotebookClient(runnable, kernel_name="python3", timeout=600, resources={"metadata": {"path": folder}})
        try:
            client.execute(env={**os.environ, "TMPDIR": folder})
        except CellExecutionError as err:
            raise PluginError(f"{path}: a cell failed while the docs executed it:\n{err}") from err
    return notebook


def output_markdown(output) -> str | None:
    """One cell output as Markdown: printed text and plain results as text blocks, PNG figures inline."""
    if output.output_type == "stream":
        if output.get("name") == "stderr":
            return None  # progress bars and warnings: not part of the tour
        text = output.get("text", "")
    elif output.output_type in ("execute_result", "display_data"):
        data = output.get("data", {})
        if "image/png" in data:
            png = data["image/png"]
            png = png if isinstance(png, str) else base64.b64encode(png).decode()
            return f'<img alt="figure drawn by the cell above" src="data:image/png;base64,{png.strip()}">'
        text = data.get("text/plain", "")
    else:
        return None  # errors stop the build before this
    lines = text.rstrip("\n").split("\n")
    if not text.strip():
        return None
    if len(lines) > MAX_TEXT_LINES:
        lines = [*lines[:MAX_TEXT_LINES], f"... ({len(lines) - MAX_TEXT_LINES} more lines)"]
    return "```text\n" + "\n".join(lines) + "\n```"


def notebook_markdown(path: Path, *, run: bool = False, notebook=None) -> str:
    """The notebook as one Markdown page: markdown cells verbatim, code cells fenced as Python, followed by their
    outputs when it was run (``run``) or when ``notebook`` (an already executed copy of ``path``) carries them."""
    if notebook is None:
        notebook = read_notebook(path)
        if run:
            notebook = execute(notebook, path)
    parts = [
        f"<!-- rendered from {path.as_posix()} by docs/hooks/notebook.py; edit the notebook, not this page -->",
    ]
    for cell in notebook.cells:
        source = cell.source.strip("\n")
        if not source:
            continue
        if cell.cell_type == "markdown":
            parts.append(source)
        elif cell.cell_type == "code":
            parts.append(f"```python\n{source}\n```")
            if SERVER_TAG in cell.metadata.get("tags", []):
                parts.append("*(needs an NDIF server: not run when the site was built)*")
            parts.extend(shown for shown in map(output_markdown, cell.get("outputs", [])) if shown)
        # raw cells are not shown (they carry no reader-facing text)
    if len(parts) == 1:
        raise PluginError(f"{path}: has no markdown or code cell to render")
    return "\n\n".join(parts) + "\n"


def on_page_read_source(page, config):
    if page.file.src_uri != PAGE:
        return None
    root = Path(config["config_file_path"]).resolve().parent
    return notebook_markdown(root / NOTEBOOK, run=os.environ.get(RUN_VARIABLE) == "1")

"""mkdocs hook: the "Quickstart notebook" page (docs/notebook.md) is rendered from examples/quickstart.ipynb.

Markdown cells are copied as they are and code cells become ```python blocks (outputs are stripped in the
repository, so there are none to show), read with nbformat: no notebook plugin, nothing fetched. A missing or
unreadable notebook stops the build naming the file, so the site never ships a stale copy.
"""

from pathlib import Path

import nbformat
from mkdocs.exceptions import PluginError

PAGE = "notebook.md"
NOTEBOOK = Path("examples") / "quickstart.ipynb"  # relative to the repository root (mkdocs.yml's folder)


def notebook_markdown(path: Path) -> str:
    """The notebook as one Markdown page: markdown cells verbatim, code cells fenced as Python."""
    try:
        notebook = nbformat.read(path, as_version=4)
    except FileNotFoundError as err:
        raise PluginError(f"{path}: not found (the Quickstart notebook page is rendered from it)") from err
    except Exception as err:  # nbformat raises several kinds for a damaged file
        raise PluginError(f"{path}: not a readable notebook ({type(err).__name__}: {err})") from err
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
        # raw cells are not shown (they carry no reader-facing text)
    if len(parts) == 1:
        raise PluginError(f"{path}: has no markdown or code cell to render")
    return "\n\n".join(parts) + "\n"


def on_page_read_source(page, config):
    if page.file.src_uri != PAGE:
        return None
    root = Path(config["config_file_path"]).resolve().parent
    return notebook_markdown(root / NOTEBOOK)

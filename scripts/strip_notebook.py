"""Strip a notebook before committing it: no outputs, no execution counts, no widget state or run metadata.

    python scripts/strip_notebook.py examples/quickstart.ipynb            # strip in place
    python scripts/strip_notebook.py --check examples/quickstart.ipynb    # exit 1, naming what is left, if not stripped

Kept: the cells' sources, their ids and tags (``needs-server`` marks the cells the tests skip), the kernelspec and
the language's name. tests/test_notebook.py checks the stored notebook is stripped, so an executed copy committed by
mistake fails the tests.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

KEPT_CELL_METADATA = ("tags",)
KEPT_NOTEBOOK_METADATA = ("kernelspec", "language_info")
KEPT_LANGUAGE_INFO = ("name",)  # the version, mimetype, etc. are the executing kernel's, filled in by a run


def leftovers(notebook) -> list[str]:
    """What a stripped notebook would not have, one line each (empty when stripped)."""
    found = []
    extra = sorted(set(notebook.metadata) - set(KEPT_NOTEBOOK_METADATA))
    if extra:
        found.append(f"notebook metadata {extra} (e.g. widget state)")
    language = sorted(set(notebook.metadata.get("language_info", {})) - set(KEPT_LANGUAGE_INFO))
    if language:
        found.append(f"notebook language_info {language}")
    for index, cell in enumerate(notebook.cells):
        where = f"cell {index} ({cell.cell_type})"
        extra = sorted(set(cell.metadata) - set(KEPT_CELL_METADATA))
        if extra:
            found.append(f"{where}: metadata {extra}")
        if cell.get("attachments"):
            found.append(f"{where}: attachments")
        if cell.cell_type == "code":
            if cell.outputs:
                found.append(f"{where}: {len(cell.outputs)} output(s)")
            if cell.execution_count is not None:
                found.append(f"{where}: execution_count {cell.execution_count}")
    return found


def strip(notebook):
    """``notebook`` stripped in place (and returned)."""
    notebook.metadata = nbformat.NotebookNode(
        {key: notebook.metadata[key] for key in KEPT_NOTEBOOK_METADATA if key in notebook.metadata}
    )
    if "language_info" in notebook.metadata:
        info = notebook.metadata.language_info
        notebook.metadata.language_info = nbformat.NotebookNode({k: info[k] for k in KEPT_LANGUAGE_INFO if k in info})
    for cell in notebook.cells:
        cell.metadata = nbformat.NotebookNode({k: cell.metadata[k] for k in KEPT_CELL_METADATA if k in cell.metadata})
        cell.pop("attachments", None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return notebook


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook is not stripped")
    args = parser.parse_args(argv)
    status = 0
    for path in args.notebooks:
        notebook = nbformat.read(path, as_version=4)
        found = leftovers(notebook)
        if args.check:
            if found:
                status = 1
                print(f"{path}: not stripped (run python scripts/strip_notebook.py {path}):", file=sys.stderr)
                print("  " + "\n  ".join(found), file=sys.stderr)
        elif found:
            nbformat.validate(strip(notebook))
            nbformat.write(notebook, path)
            print(f"{path}: stripped ({len(found)} item(s))")
    return status


if __name__ == "__main__":
    sys.exit(main())

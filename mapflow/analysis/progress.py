"""The progress bar: tqdm's notebook widget where ipywidgets can draw it, the plain text bar elsewhere.

``tqdm.auto`` alone warns ("IProgress not found") in every notebook without ipywidgets, the common case."""

from __future__ import annotations

import importlib.util


def _widgets_available() -> bool:
    return importlib.util.find_spec("ipywidgets") is not None


if _widgets_available():
    from tqdm.auto import tqdm
else:
    from tqdm.std import tqdm

__all__ = ["tqdm"]

"""The command line, every argument parser of mapflow: `commands` (``mapflow …``: the parser and the commands),
`demo` (``mapflow demo``), `bench` (``mapflow bench``), `calibrate` (``mapflow calibrate``), `organism`
(``mapflow organism …`` and ``python -m mapflow.organism.synthetic``), `ndif_server` (``mapflow ndif …``),
`tokenizers` (``mapflow tokenizers fetch``), `options` and `remote_options` (shared option parsing)."""

from .commands import main  # the ``mapflow`` entry point (pyproject.toml: mapflow.cli:main)

__all__ = ["main"]

"""The command line (`commands`: argument parsing and the commands), the demo suite (`demo`) and `bench`."""

from .._reexport import reexport

__getattr__ = reexport(__name__, ("commands",))

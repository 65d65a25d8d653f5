"""Results layer: the zarr result store (`store`), provenance (`provenance`), integrity checks (`integrity`),
the single-writer lock (`store_lock`), the per-task split (`tasks`) and the summaries read from stores (`metrics`).

The names of the former ``mapflow.results`` module (now `store`) import from here too."""

from .._reexport import reexport

__getattr__ = reexport(__name__, ("store",))

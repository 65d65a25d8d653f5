"""Results layer: the zarr result store (`store`), provenance (`provenance`), integrity checks (`integrity`),
the single-writer lock (`store_lock`), the per-task split (`tasks`) and the summaries read from stores (`metrics`).
Import names from their module, e.g. ``from mapflow.results.store import open_dataset``."""

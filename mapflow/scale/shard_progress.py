"""Samples done over all shards of a run directory, read from the shard stores' committed counts (what a shard has
stored is what counts: a sample in flight on a worker that dies is not counted until it is measured again)."""

from __future__ import annotations

from pathlib import Path

from ..errors import MapflowError
from ..results.integrity import COMMITTED_KEY, FAILURES_KEY, read_root_attrs
from ..results.shards import shard_stores


def samples_done(run_dir: Path) -> int:
    """Samples stored or recorded as failed over every shard store; a store being created reads as none yet."""
    total = 0
    for store in shard_stores(run_dir).values():
        try:
            attrs = read_root_attrs(store, check_group=False)
        except (MapflowError, OSError, ValueError):  # created under us, or mid-write: counted at the next poll
            continue
        total += int(attrs.get(COMMITTED_KEY, 0)) + len(attrs.get(FAILURES_KEY, {}))
    return total

"""Which samples one shard of a run measures.

A run's samples (in the order `prepare_run` resolves them: per task, chosen with the seed) are split over N shards
by position: sample ``i`` goes to shard ``i mod N`` (round robin). Why round robin and not contiguous blocks: the
samples come grouped by task and tasks differ in cost (video length, number of options, how many samples are
answered correctly and so get knocked out), so a block split would give one shard the expensive task; round robin
gives every shard a slice of each task, and shard sizes differ by at most one. The split depends only on the run's
ordered sample list and N: not on which shards run, when, or how often they were resumed.

Shard indices are 0-based, as SLURM array task ids are: ``sbatch --array=0-(N-1)`` with
``--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

from ..errors import MapflowError

_SHARD_TEXT = re.compile(r"^\s*(-?\d+)\s*/\s*(-?\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        check_shard(self.index, self.count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def check_shard(index, count) -> None:
    """One line for a shard that cannot be: a count below 1 or an index outside 0..count-1."""
    if isinstance(index, bool) or isinstance(count, bool) or not isinstance(index, int) or not isinstance(count, int):
        raise MapflowError(f"shard {index}/{count}: index and count are whole numbers, e.g. 0/4")
    if count < 1:
        raise MapflowError(f"shard {index}/{count}: the shard count is at least 1")
    if not 0 <= index < count:
        raise MapflowError(
            f"shard {index}/{count}: the index is 0-based, 0..{count - 1} for {count} shards "
            f"(SLURM: --array=0-{count - 1} with --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)"
        )


def parse_shard(text: str) -> Shard:
    """``"I/N"`` (``--shard``) as a `Shard`."""
    match = _SHARD_TEXT.match(str(text))
    if match is None:
        raise MapflowError(f"--shard {text}: expected I/N, e.g. 0/4 (shard I of N, 0-based)")
    return Shard(int(match.group(1)), int(match.group(2)))


def as_shard(value) -> Shard | None:
    """None, a `Shard`, ``(index, count)`` or ``"I/N"``."""
    if value is None or isinstance(value, Shard):
        return value
    if isinstance(value, str):
        return parse_shard(value)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return Shard(*value)
    raise MapflowError(f"shard is (index, count) or 'I/N', e.g. (0, 4); got {value!r}")


def shard_positions(total: int, shard: Shard) -> range:
    """The positions in the run's ordered sample list that ``shard`` measures."""
    return range(shard.index, total, shard.count)


def select_shard(samples: list, shard: Shard) -> list:
    """The shard's part of ``samples`` (same type: a `BenchmarkSamples` keeps where the samples came from), in run
    order. Bad annotation entries are not samples of the list: shard 0 records them, so the merged run has them
    once."""
    part = [samples[position] for position in shard_positions(len(samples), shard)]
    if type(samples) is list:
        return part
    selected = copy.copy(samples)  # the list subclass with its attributes
    selected[:] = part
    if hasattr(selected, "bad_entries") and shard.index != 0:
        selected.bad_entries = []
    return selected

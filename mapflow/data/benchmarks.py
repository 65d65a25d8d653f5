"""Registry of the benchmark loaders with the frame sampling each one is evaluated with.

Defaults follow the paper code (spec §3, §4, A10): 8 frames for every benchmark and model;
LongVideoBench with its own index rule (the paper's §F.2 also runs it with 24 frames: pass
``num_frames=24`` to `read_frames`); Video-MME and the rest with the LLaVA path's segment
midpoints. Options are "(A) text" except Video-MME's "A. text" (recorded on each `Sample`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .longvideobench import load_longvideobench
from .sample import Sample
from .tomato import load_tomato
from .tvbench import load_tvbench
from .vcgbench import load_vcgbench
from .video import FRAME_RULES
from .videomme import load_videomme
from ..errors import DataError

Loader = Callable[..., list[Sample]]


@dataclass(frozen=True)
class Benchmark:
    """How to load one benchmark and how the paper samples its frames."""

    name: str
    loader: Loader  # loader(root, tasks=None, limit=None, seed=42) -> list[Sample]
    frame_rule: str
    num_frames: int
    free_form: bool = False  # True: samples carry a reference answer instead of candidates
    note: str = ""

    def __post_init__(self) -> None:
        if self.frame_rule not in FRAME_RULES:
            raise ValueError(f"benchmark {self.name}: unknown frame rule {self.frame_rule!r}")


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("tvbench", load_tvbench, "segment_midpoint", 8),
        Benchmark("tomato", load_tomato, "segment_midpoint", 8),
        Benchmark(
            "longvideobench", load_longvideobench, "longvideobench", 8,
            note="the paper's §F.2 also uses 24 frames",
        ),
        Benchmark("videomme", load_videomme, "segment_midpoint", 8, note="options written 'A. text'"),
        Benchmark("vcgbench", load_vcgbench, "segment_midpoint", 8, free_form=True,
                  note="free-form; tasks default to temporal_qa"),
    )
}


def get_benchmark(name: str) -> Benchmark:
    """The registry entry for `name`; an unknown name lists the known ones."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise DataError(
            f"unknown benchmark {name!r}; known benchmarks are: {', '.join(BENCHMARKS)}", field="benchmark"
        ) from None


def read_benchmark(name: str, root: str | Path, **kwargs) -> list[Sample]:
    """The samples of benchmark `name` under `root` as a plain list; `kwargs` go to its loader (tasks, limit, seed).
    The public `mapflow.load_benchmark` adds the embedded default, bad-entry collection and provenance."""
    return get_benchmark(name).loader(root, **kwargs)

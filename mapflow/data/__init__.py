"""Data-in layer: benchmark loaders, frame sampling/decoding and a tiny synthetic dataset."""

from __future__ import annotations

from typing import Any

from mapflow.data.benchmarks import BENCHMARKS, Benchmark, get_benchmark, load_benchmark
from mapflow.data.longvideobench import load_longvideobench
from mapflow.data.sample import NO_ANSWER_INDEX, OPTION_FORMATS, Sample
from mapflow.data.tomato import TOMATO_TASKS, load_tomato
from mapflow.data.tvbench import TVBENCH_TASKS, check_videos_exist, load_tvbench
from mapflow.data.vcgbench import VCGBENCH_TASKS, load_vcgbench
from mapflow.data.video import (
    DEFAULT_DECODE_TIMEOUT_S,
    FRAME_RULES,
    VideoFrames,
    frame_indices,
    longvideobench_indices,
    read_frames,
    segment_midpoint_indices,
)
from mapflow.data.videomme import load_videomme

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "DEFAULT_DECODE_TIMEOUT_S",
    "FRAME_RULES",
    "NO_ANSWER_INDEX",
    "OPTION_FORMATS",
    "Sample",
    "TOMATO_TASKS",
    "TVBENCH_TASKS",
    "VCGBENCH_TASKS",
    "VideoFrames",
    "check_videos_exist",
    "frame_indices",
    "get_benchmark",
    "load_benchmark",
    "load_longvideobench",
    "load_tomato",
    "load_tvbench",
    "load_vcgbench",
    "load_videomme",
    "longvideobench_indices",
    "read_frames",
    "segment_midpoint_indices",
    "write_tiny_tvbench",
]


def __getattr__(name: str) -> Any:
    # Imported lazily so `python -m mapflow.data.synthetic` does not import its own module twice.
    if name == "write_tiny_tvbench":
        from mapflow.data.synthetic import write_tiny_tvbench

        return write_tiny_tvbench
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

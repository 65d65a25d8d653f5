"""Data-in layer: benchmark loaders and frame sampling/decoding (the synthetic benchmark's generator is
`mapflow.organism.synthetic`)."""

from __future__ import annotations

from .benchmarks import BENCHMARKS, Benchmark, get_benchmark, read_benchmark
from .longvideobench import load_longvideobench
from .sample import NO_ANSWER_INDEX, OPTION_FORMATS, Sample
from .tomato import TOMATO_TASKS, load_tomato
from .tvbench import TVBENCH_TASKS, check_videos_exist, load_tvbench
from .vcgbench import VCGBENCH_TASKS, load_vcgbench
from .video import (
    DEFAULT_DECODE_TIMEOUT_S,
    FRAME_RULES,
    VideoFrames,
    frame_indices,
    longvideobench_indices,
    read_frames,
    segment_midpoint_indices,
)
from .videomme import load_videomme

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
    "read_benchmark",
    "load_longvideobench",
    "load_tomato",
    "load_tvbench",
    "load_vcgbench",
    "load_videomme",
    "longvideobench_indices",
    "read_frames",
    "segment_midpoint_indices",
]

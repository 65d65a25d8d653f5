"""Data-in layer: benchmark loaders, frame sampling/decoding and a tiny synthetic dataset."""

from __future__ import annotations

from typing import Any

from mapflow.data.sample import Sample
from mapflow.data.tvbench import TVBENCH_TASKS, check_videos_exist, load_tvbench
from mapflow.data.video import VideoFrames, read_frames, segment_midpoint_indices

__all__ = [
    "Sample",
    "TVBENCH_TASKS",
    "VideoFrames",
    "check_videos_exist",
    "load_tvbench",
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

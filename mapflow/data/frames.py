"""Decoded video frames: what `mapflow.data.video` returns and `mapflow.data.frame_cache` stores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VideoFrames:
    """Decoded frames plus the facts needed to reproduce which frames they are."""

    frames: np.ndarray  # uint8, (T, H, W, 3), RGB
    indices: np.ndarray  # int64, (T,), indices into the full video
    fps: float
    num_video_frames: int

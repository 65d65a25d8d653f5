"""Small frame images and video-token grid coordinates kept with a study's results, so figures that draw on the
frames (logit-lens overlays, attention maps) need nothing but the results store."""

from __future__ import annotations

import numpy as np
import xarray as xr
from PIL import Image

THUMBNAIL_SIZE = 96


def frame_thumbnails(ctx, size: int = THUMBNAIL_SIZE) -> xr.Dataset:
    """The input frames resized to ``size`` x ``size`` RGB, as ``frame_pixels`` (input_frame, y, x, rgb)."""
    if ctx.frames is None:
        return xr.Dataset()
    images = [
        np.asarray(Image.fromarray(np.asarray(f, dtype=np.uint8)).resize((size, size), Image.BILINEAR))
        for f in ctx.frames
    ]
    return xr.Dataset({"frame_pixels": (("input_frame", "y", "x", "rgb"), np.stack(images))})


def video_token_coords(layout) -> dict:
    """``video_token`` index with the (frame, row, col) of each token in the model's video grid. Without a regular
    grid (frames of different token counts) ``row`` is 0 and ``col`` counts the tokens inside the frame."""
    if layout.video_grid is not None:
        t, h, w = layout.video_grid
        index = np.arange(t * h * w)
        return {
            "video_token": index,
            "frame": ("video_token", index // (h * w)),
            "row": ("video_token", (index % (h * w)) // w),
            "col": ("video_token", index % w),
        }
    frame = np.concatenate([np.full(len(f), i) for i, f in enumerate(layout.frames)])
    col = np.concatenate([np.arange(len(f)) for f in layout.frames])
    return {
        "video_token": np.arange(len(frame)),
        "frame": ("video_token", frame),
        "row": ("video_token", np.zeros_like(col)),
        "col": ("video_token", col),
    }

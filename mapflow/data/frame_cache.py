"""Decoded frames cached on disk, so a sweep over many layers and flows decodes each video once.

One uncompressed ``.npz`` per (video, sampling) under the cache folder, named by a hash of
`FrameCacheKey`: the video's absolute path, mtime_ns and size (a replaced or edited video misses)
and the sampling rule, frame count, clip bounds and stated duration. The key is also stored in
the file and checked on load, so a stale, foreign or corrupt file is a miss and gets rewritten.
Writes go to a temporary file in the same folder and are renamed into place, so a reader never
sees a half-written file and concurrent writers just race to an identical result.

Caching is off unless asked for: ``read_frames(..., cache_dir=True | path)`` or the environment
variable ``MAPFLOW_CACHE_DIR``. Nothing evicts old files; 8 frames of a 720p video take ~22 MB.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .frames import VideoFrames

CACHE_ENV_VAR = "MAPFLOW_CACHE_DIR"
# Bump when the file layout or the meaning of a key changes: old files then simply miss.
CACHE_FORMAT_VERSION = 1

_log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$MAPFLOW_CACHE_DIR`` if set, else ``~/.cache/mapflow/frames``."""
    configured = os.environ.get(CACHE_ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "mapflow" / "frames"


def open_cache(cache_dir: str | Path | bool | None) -> FrameCache | None:
    """The cache `read_frames` should use: False = none; None = ``$MAPFLOW_CACHE_DIR`` if set, else
    none; True = `default_cache_dir()`; a path = that folder."""
    if cache_dir is False:
        return None
    if cache_dir is None:
        configured = os.environ.get(CACHE_ENV_VAR)
        return FrameCache(Path(configured).expanduser()) if configured else None
    if cache_dir is True:
        return FrameCache(default_cache_dir())
    return FrameCache(Path(cache_dir).expanduser())


@dataclass(frozen=True)
class FrameCacheKey:
    """Everything that decides which frames `read_frames` returns for a file."""

    path: str
    mtime_ns: int
    size: int
    rule: str
    num_frames: int
    start: float | None
    end: float | None
    duration: float | None

    @classmethod
    def for_file(
        cls,
        path: str | Path,
        rule: str,
        num_frames: int,
        start: float | None = None,
        end: float | None = None,
        duration: float | None = None,
    ) -> FrameCacheKey:
        path = Path(path).resolve()
        stat = path.stat()
        return cls(str(path), stat.st_mtime_ns, stat.st_size, rule, int(num_frames),
                   _seconds(start), _seconds(end), _seconds(duration))

    def to_json(self) -> str:
        return json.dumps({"version": CACHE_FORMAT_VERSION, **asdict(self)}, sort_keys=True)

    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()


def _seconds(value: float | None) -> float | None:
    # Keys compare as JSON text, where 1 and 1.0 differ; store every bound as a float.
    return None if value is None else float(value)


class FrameCache:
    """A folder of cached `VideoFrames`, one ``{digest}.npz`` per `FrameCacheKey`."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def path_for(self, key: FrameCacheKey) -> Path:
        return self.directory / f"{key.digest()}.npz"

    def load(self, key: FrameCacheKey) -> VideoFrames | None:
        """The cached frames, or None on a miss (absent, unreadable, or written for another key)."""
        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                if str(stored["key"]) != key.to_json():
                    return None
                video = VideoFrames(
                    frames=np.array(stored["frames"], dtype=np.uint8),
                    indices=np.array(stored["indices"], dtype=np.int64),
                    fps=float(stored["fps"]),
                    num_video_frames=int(stored["num_video_frames"]),
                )
        except Exception as err:  # any unreadable file is a miss; the caller rewrites it
            _log.info("ignoring unreadable frame cache file %s (%s: %s)", path, type(err).__name__, err)
            return None
        if video.frames.ndim != 4 or video.frames.shape[0] != key.num_frames or len(video.indices) != key.num_frames:
            return None
        return video

    def store(self, key: FrameCacheKey, video: VideoFrames) -> Path | None:
        """Write `video` atomically; returns the file, or None (with a warning) if it cannot be written.

        Skipped when the video changed while it was being decoded: the frames may be from
        either version, so they must not be filed under the old key.
        """
        try:
            unchanged = FrameCacheKey.for_file(key.path, key.rule, key.num_frames, key.start, key.end, key.duration) == key
        except OSError:  # the video vanished meanwhile
            return None
        if not unchanged:
            return None
        target = self.path_for(key)
        temp_name = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle, temp_name = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".npz")
            with os.fdopen(handle, "wb") as stream:
                np.savez(
                    stream,
                    key=np.array(key.to_json()),
                    frames=video.frames,
                    indices=video.indices,
                    fps=np.array(video.fps),
                    num_video_frames=np.array(video.num_video_frames),
                )
            os.replace(temp_name, target)
            return target
        except OSError as err:
            # A full disk or read-only cache must not stop an analysis: decoding still worked.
            warnings.warn(f"could not write frame cache file {target}: {err}", RuntimeWarning, stacklevel=2)
            if temp_name is not None and os.path.exists(temp_name):
                os.unlink(temp_name)
            return None

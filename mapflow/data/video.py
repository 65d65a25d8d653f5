"""Pick frame indices and decode video frames for a `Sample`.

The default rule, `segment_midpoint_indices`, reproduces the frame sampling of the TVBench
paper code (split the clip into T equal segments and take each segment's middle), so frames
match the published evaluation exactly; "linspace" is VideoLLaMA3's rule and "longvideobench"
LongVideoBench's own (spec §3). Decoding uses decord and falls back to PyAV when decord
cannot open or decode a file; it runs in a worker thread with a timeout, and its result can be
cached on disk (`mapflow.data.frame_cache`).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from . import frame_cache
from .frames import VideoFrames
from .sample import Sample

FRAME_RULES: tuple[str, ...] = ("segment_midpoint", "linspace", "longvideobench")

# Seconds one video may take to decode before `read_frames` gives up on it (None = no limit).
DEFAULT_DECODE_TIMEOUT_S: float = 120.0

# Largest frame (width x height) `read_frames` decodes: 4096 x 4096 admits DCI 4K. Decoders hold many full-size frames
# at once, so a 10000 x 10000 clip (a few KB on disk) would take tens of GB; such a video is refused before decoding.
# ``$MAPFLOW_MAX_FRAME_PIXELS`` overrides it.
MAX_FRAME_PIXELS: int = 4096 * 4096
MAX_FRAME_PIXELS_ENV = "MAPFLOW_MAX_FRAME_PIXELS"

# Chooses frame indices once the decoder knows (num_video_frames, fps).
IndexChooser = Callable[[int, float], np.ndarray]


@dataclass(frozen=True)
class VideoInfo:
    """What the container header says, read without decoding a frame (`probe_video`)."""

    width: int
    height: int
    num_frames: int | None  # None when the container does not state it


class _DecoderFailure(Exception):
    """A backend could not open or decode the file (triggers the fallback, never escapes)."""


# --- index rules ------------------------------------------------------------------------


def segment_midpoint_indices(
    num_video_frames: int,
    fps: float,
    num_frames: int = 8,
    start: float | None = None,
    end: float | None = None,
) -> np.ndarray:
    """Middle frame of each of `num_frames` equal segments of the clip [start, end] (seconds).

    Same arithmetic as the paper code, including Python/NumPy half-to-even rounding and the
    final truncation with int(); a missing bound means the start/end of the video.
    """
    return _segment_midpoint_indices(num_video_frames, fps, num_frames, start, end, where={})


def linspace_indices(num_video_frames: int, num_frames: int = 8) -> np.ndarray:
    """`num_frames` evenly spaced indices from the first to the last frame (both included)."""
    _check_counts(num_video_frames, num_frames, where={})
    return np.linspace(0, num_video_frames - 1, num_frames, dtype=int).astype(np.int64)


def longvideobench_indices(
    num_video_frames: int,
    fps: float,
    num_frames: int = 8,
    duration: float | None = None,
) -> np.ndarray:
    """LongVideoBench's rule: n = min(T, int(duration)) frames spaced int(int(duration*fps) / n)
    apart from frame 0, padded with the last index up to T.

    `duration` is the benchmark's stated length in seconds (None = the video's own,
    num_video_frames / fps). Unlike the original, which divides by zero, a clip shorter than
    1 s gives n = 1 (frame 0 repeated).
    """
    return _longvideobench_indices(num_video_frames, fps, num_frames, duration, where={})


def frame_indices(
    num_video_frames: int,
    fps: float,
    num_frames: int = 8,
    start: float | None = None,
    end: float | None = None,
    rule: str = "segment_midpoint",
    *,
    duration: float | None = None,
) -> np.ndarray:
    """Frame indices under `rule`; "linspace" spreads evenly over the clip [start, end].

    `duration` is used only by "longvideobench", which takes no clip bound.
    """
    return _frame_indices(num_video_frames, fps, num_frames, start, end, rule, where={}, duration=duration)


def _frame_indices(
    num_video_frames: int,
    fps: float,
    num_frames: int,
    start: float | None,
    end: float | None,
    rule: str,
    where: dict[str, Any],
    duration: float | None = None,
) -> np.ndarray:
    _check_rule(rule)
    _check_rule_bounds(rule, start, end)
    if rule == "segment_midpoint":
        return _segment_midpoint_indices(num_video_frames, fps, num_frames, start, end, where)
    if rule == "longvideobench":
        return _longvideobench_indices(num_video_frames, fps, num_frames, duration, where)
    _check_counts(num_video_frames, num_frames, where)
    start_idx, end_idx = _clip_frame_range(num_video_frames, fps, start, end, where)
    return start_idx + np.linspace(0, end_idx - start_idx, num_frames, dtype=int).astype(np.int64)


def _segment_midpoint_indices(
    num_video_frames: int,
    fps: float,
    num_frames: int,
    start: float | None,
    end: float | None,
    where: dict[str, Any],
) -> np.ndarray:
    _check_counts(num_video_frames, num_frames, where)
    start_idx, end_idx = _clip_frame_range(num_video_frames, fps, start, end, where)
    segment = (end_idx - start_idx) / num_frames
    indices = [int(start_idx + segment / 2 + np.round(segment * i)) for i in range(num_frames)]
    return np.asarray(indices, dtype=np.int64)


def _longvideobench_indices(
    num_video_frames: int,
    fps: float,
    num_frames: int,
    duration: float | None,
    where: dict[str, Any],
) -> np.ndarray:
    _check_counts(num_video_frames, num_frames, where)
    fps = float(fps)
    if not (math.isfinite(fps) and fps > 0):
        raise DataError(f"the longvideobench rule needs a positive frame rate, got fps={fps}", field="fps", **where)
    if duration is None:
        duration = num_video_frames / fps
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not (
        math.isfinite(duration) and duration > 0
    ):
        raise DataError(f"duration must be a positive number of seconds, got {duration!r}", field="duration", **where)

    total_valid_frames = int(duration * fps)
    count = max(1, min(num_frames, int(duration)))
    step = int(total_valid_frames / count)
    indices = [step * i for i in range(count)]
    indices += [indices[-1]] * (num_frames - count)
    if indices[-1] > num_video_frames - 1:
        raise DataError(
            f"the stated duration {duration:g} s at {fps:g} fps reaches frame {indices[-1]}, past the last frame "
            f"({num_video_frames - 1}) of the video",
            field="duration",
            **where,
        )
    return np.asarray(indices, dtype=np.int64)


def _clip_frame_range(
    num_video_frames: int,
    fps: float,
    start: float | None,
    end: float | None,
    where: dict[str, Any],
) -> tuple[int, int]:
    """First and last frame index of the clip, clamped to the video as the paper code does."""
    max_frame = num_video_frames - 1
    if start is None and end is None:
        return 0, max_frame
    fps = float(fps)
    if not (math.isfinite(fps) and fps > 0):
        raise DataError(f"a clip bound needs a positive frame rate, got fps={fps}", field="fps", **where)

    # Python's round() is half-to-even, like the paper code.
    start_idx = 0 if start is None else max(0, round(start * fps))
    end_idx = max_frame if end is None else min(round(end * fps), max_frame)
    if start_idx > max_frame:
        raise DataError(
            f"clip start {start} s (frame {start_idx}) lies after the last frame "
            f"({max_frame}, video has {num_video_frames} frames at {fps:g} fps)",
            field="start",
            **where,
        )
    if end_idx < start_idx:
        raise DataError(
            f"clip [{start}, {end}] s maps to frames [{start_idx}, {end_idx}], which is empty",
            field="end",
            **where,
        )
    return start_idx, end_idx


def _check_counts(num_video_frames: int, num_frames: int, where: dict[str, Any]) -> None:
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    if num_video_frames < 1:
        raise DataError(f"video has {num_video_frames} frames", field="video", **where)


def _check_rule(rule: str) -> None:
    if rule not in FRAME_RULES:
        raise ValueError(f"unknown frame rule {rule!r}; choose one of {FRAME_RULES}")


def _check_rule_bounds(rule: str, start: float | None, end: float | None) -> None:
    if rule == "longvideobench" and (start is not None or end is not None):
        raise ValueError("the longvideobench rule samples whole videos and takes no clip bound (start/end)")


# --- decoding ---------------------------------------------------------------------------


def read_frames(
    sample: Sample,
    num_frames: int = 8,
    rule: str = "segment_midpoint",
    *,
    timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S,
    cache_dir: str | Path | bool | None = None,
) -> VideoFrames:
    """Decode `num_frames` frames of the sample's clip; errors name the video and the sample.

    See `read_frames_from_path` for `timeout_s` and `cache_dir`; the sample's stated
    `duration` feeds the "longvideobench" rule.
    """
    return read_frames_from_path(
        sample.video_path,
        num_frames=num_frames,
        start=sample.start,
        end=sample.end,
        rule=rule,
        sample_id=sample.sample_id,
        duration=sample.duration,
        timeout_s=timeout_s,
        cache_dir=cache_dir,
    )


def read_frames_from_path(
    path: str | Path,
    num_frames: int = 8,
    start: float | None = None,
    end: float | None = None,
    rule: str = "segment_midpoint",
    *,
    sample_id: str | None = None,
    duration: float | None = None,
    timeout_s: float | None = DEFAULT_DECODE_TIMEOUT_S,
    cache_dir: str | Path | bool | None = None,
) -> VideoFrames:
    """Decode `num_frames` frames chosen by `rule` from the clip [start, end] (seconds).

    Decoding runs in a worker thread; if it takes longer than `timeout_s` seconds (None = no
    limit) a `DataError` names the file and the sample, and the stuck thread is abandoned
    (threads cannot be killed; it ends when its decoder returns).
    `cache_dir`: False or None = no disk cache (None still honours ``$MAPFLOW_CACHE_DIR``),
    True = the default cache folder, a path = that folder; see `mapflow.data.frame_cache`.
    """
    path = Path(path)
    where: dict[str, Any] = {"file": path, "sample": sample_id}
    _check_rule(rule)
    _check_rule_bounds(rule, start, end)
    _check_timeout(timeout_s)
    _check_video_file(path, where)
    _check_frame_size(path, where)

    cache = frame_cache.open_cache(cache_dir)
    if cache is not None:
        key = frame_cache.FrameCacheKey.for_file(path, rule, num_frames, start, end, duration)
        cached = cache.load(key)
        if cached is not None:
            return cached

    def choose(num_video_frames: int, fps: float) -> np.ndarray:
        if num_video_frames < num_frames:
            raise DataError(
                f"video has {num_video_frames} frames, fewer than the {num_frames} requested",
                field="video",
                **where,
            )
        return _frame_indices(num_video_frames, fps, num_frames, start, end, rule, where, duration)

    video = _run_with_timeout(lambda: _decode(path, choose, where), timeout_s, where)
    if cache is not None:
        cache.store(key, video)
    return video


def _decode(path: Path, choose: IndexChooser, where: dict[str, Any]) -> VideoFrames:
    budget = max_frame_pixels()
    # decord decodes every frame at its own size but hands it back scaled to the header's, so neither a frame above
    # the budget (allocated before anyone sees it) nor a size change (silently squashed) shows in its output: the
    # sizes are checked on PyAV first, which refuses an oversized frame before allocating it
    _scan_frame_sizes(path, budget, where)
    try:
        return _decode_with_decord(path, choose)
    except _DecoderFailure as decord_failure:
        try:
            return _decode_with_pyav(path, choose, budget, where)
        except _DecoderFailure as pyav_failure:
            raise DataError(
                f"cannot decode video (decord: {decord_failure}; PyAV: {pyav_failure})",
                field="video",
                **where,
            ) from pyav_failure


def _check_timeout(timeout_s: float | None) -> None:
    if timeout_s is None:
        return
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
        raise ValueError(f"timeout_s must be a positive number of seconds or None, got {timeout_s!r}")


def _run_with_timeout(
    decode: Callable[[], VideoFrames], timeout_s: float | None, where: dict[str, Any]
) -> VideoFrames:
    """Run `decode` in a daemon thread and wait at most `timeout_s` seconds for it.

    A thread (not a process) because the decoders release the GIL, frames need no copying
    back, and forking a process that holds CUDA or decoder threads is unsafe; the price is that
    a stuck decoder cannot be killed, only abandoned (daemon, so it never blocks exit).
    """
    if timeout_s is None:
        return decode()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["video"] = decode()
        except BaseException as err:  # handed to the caller's thread below
            outcome["error"] = err

    name = Path(str(where.get("file"))).name
    worker = threading.Thread(target=target, name=f"mapflow-decode-{name}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise DataError(
            f"decoding did not finish within {timeout_s:g} s (timeout_s); the video may be huge or the "
            "decoder stuck",
            field="video",
            **where,
        )
    if "error" in outcome:
        raise outcome["error"]
    return outcome["video"]


def _check_video_file(path: Path, where: dict[str, Any]) -> None:
    # Checked up front: decord's messages for these cases do not say what is wrong.
    if not path.exists():
        raise DataError("video file does not exist", field="video", **where)
    if not path.is_file():
        raise DataError("video path is not a regular file", field="video", **where)
    if path.stat().st_size == 0:
        raise DataError("video file is empty (0 bytes)", field="video", **where)


def probe_video(path: str | Path) -> VideoInfo | None:
    """Frame size and stated frame count from the container header (PyAV, no decoding); None if it cannot be read
    (the decoders then report the file)."""
    try:
        import av

        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            count = int(stream.frames or 0)
    except Exception:  # any unreadable header: the decoders name the problem
        return None
    return VideoInfo(int(width), int(height), count or None)


def max_frame_pixels() -> int:
    """The decoding budget in pixels per frame: ``$MAPFLOW_MAX_FRAME_PIXELS`` if set, else `MAX_FRAME_PIXELS`."""
    configured = os.environ.get(MAX_FRAME_PIXELS_ENV)
    if not configured:
        return MAX_FRAME_PIXELS
    try:
        budget = int(configured)
    except ValueError:
        budget = 0
    if budget < 1:
        raise DataError(f"${MAX_FRAME_PIXELS_ENV}={configured!r}: give a positive whole number of pixels per frame "
                        f"(default {MAX_FRAME_PIXELS} = 4096 x 4096)", field=MAX_FRAME_PIXELS_ENV)
    return budget


def _over_budget(width: int, height: int, budget: int, position: int, header: tuple[int, int] | None,
                 where: dict[str, Any]) -> DataError:
    stated = f"; the header says {header[0]}x{header[1]}, so the size changes mid-stream" if header else ""
    return DataError(
        f"frame {position} is {width}x{height} = {width * height} pixels, above the decoding budget of {budget} "
        f"pixels (${MAX_FRAME_PIXELS_ENV}){stated}; scale the video down (e.g. ffmpeg -vf scale=-2:1080)",
        field="video",
        **where,
    )


def _check_frame_size(path: Path, where: dict[str, Any]) -> None:
    """The header's frame size against the budget (cheap, before the cache and the decoders)."""
    info = probe_video(path)
    budget = max_frame_pixels()
    if info is not None and info.width * info.height > budget:
        raise DataError(
            f"frames are {info.width}x{info.height} = {info.width * info.height} pixels, above the decoding budget of "
            f"{budget} pixels (${MAX_FRAME_PIXELS_ENV}); scale the video down (e.g. ffmpeg -vf scale=-2:1080)",
            field="video",
            **where,
        )


# Codecs whose frame size can change only at a keyframe (H.264/HEVC: a new sequence starts with an IDR/IRAP picture;
# MPEG-1/2/4 Part 2: a sequence header precedes an intra picture; VP8: the size is in keyframe headers; MJPEG: every
# frame is one): the size scan decodes only their keyframes. Any other codec (VP9 and AV1 can change size on inter
# frames) is scanned frame by frame.
KEYFRAME_SIZED_CODECS = frozenset({"h264", "hevc", "mpeg1video", "mpeg2video", "mpeg4", "vp8", "mjpeg"})


def _limited_decoder(stream, budget: int) -> None:
    # ffmpeg's own per-picture limit: a picture above it is refused before its buffer is allocated (an error from
    # the decoder, after which the codec context holds the size the stream asked for)
    stream.codec_context.options = {**stream.codec_context.options, "max_pixels": str(budget)}


def _sized_frames(container, stream, budget: int, where: dict[str, Any], *, keyframes_only: bool = False):
    """Every decoded frame of ``stream`` (keyframes only if asked), each held to the pixel budget before it is used.

    The check runs twice per packet: on the codec context after the packet is sent (the size a new sequence header
    announces; with ``max_pixels`` set the decoder has refused that picture rather than allocate it) and on every
    frame that comes out. A refused picture becomes a `DataError` naming the frame, its size and the budget.
    """
    context = stream.codec_context
    header = (context.width, context.height) if context.width and context.height else None
    if keyframes_only:
        context.skip_frame = "NONKEY"
    position = 0  # frames sent so far, counted in packets: for a keyframe (a new sequence) its index in the video
    emitted = 0  # frames out of the decoder: their index in the video when every frame is decoded
    for packet in container.demux(stream):
        frames = _send(packet, context, budget, position, header, where)
        if packet.size:  # not the empty flush packet at the end
            position += 1
        for frame in frames:
            if frame.width * frame.height > budget:
                index = position - 1 if keyframes_only else emitted
                raise _over_budget(frame.width, frame.height, budget, index, header, where)
            emitted += 1
            yield frame


def _send(packet, context, budget: int, position: int, header, where: dict[str, Any]) -> list:
    try:
        frames = packet.decode()
    except Exception:
        if context.width * context.height > budget:
            raise _over_budget(context.width, context.height, budget, position, header, where) from None
        raise
    if context.width * context.height > budget:
        raise _over_budget(context.width, context.height, budget, position, header, where)
    return frames


def _scan_frame_sizes(path: Path, budget: int, where: dict[str, Any]) -> None:
    """Refuse a video any of whose frames is above the budget or whose frames change size, before decord decodes it.

    Decodes keyframes only where the codec can change size only there (`KEYFRAME_SIZED_CODECS`), else every frame;
    a file PyAV cannot read is left to the decoders, which name the problem.
    """
    try:
        import av
    except ImportError:  # without PyAV only the header check guards decord
        return
    sizes: dict[tuple[int, int], None] = {}  # in the order first seen
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return
            stream = container.streams.video[0]
            _limited_decoder(stream, budget)
            keyframes_only = stream.codec_context.name in KEYFRAME_SIZED_CODECS
            for frame in _sized_frames(container, stream, budget, where, keyframes_only=keyframes_only):
                sizes.setdefault((frame.width, frame.height), None)
    except DataError:
        raise
    except Exception:  # unreadable here: decord and the PyAV fallback report it
        return
    if len(sizes) > 1:
        listed = ", ".join(f"{w}x{h}" for w, h in sizes)
        raise DataError(f"frames change size mid-stream ({listed}); decord would scale every frame to the first size "
                        "and PyAV cannot stack them: re-encode the video to one size (e.g. ffmpeg -vf scale=-2:720)",
                        field="video", **where)


def _decode_with_decord(path: Path, choose: IndexChooser) -> VideoFrames:
    try:
        import decord

        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        num_video_frames = len(reader)
        fps = float(reader.get_avg_fps())
    except Exception as err:  # decord raises bare RuntimeErrors; any failure means "try PyAV"
        raise _DecoderFailure(f"{type(err).__name__}: {err}") from err
    if num_video_frames <= 0:
        raise _DecoderFailure("reports 0 frames")

    indices = choose(num_video_frames, fps)
    try:
        batch = reader.get_batch(indices.tolist())
        # Another module may have set a decord bridge (e.g. torch); np.asarray covers that.
        frames = batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)
    except Exception as err:
        raise _DecoderFailure(f"{type(err).__name__}: {err}") from err
    return _video_frames(frames, indices, fps, num_video_frames)


def _decode_with_pyav(path: Path, choose: IndexChooser, budget: int | None = None,
                      where: dict[str, Any] | None = None) -> VideoFrames:
    # Two passes: count frames first (the container's count is not reliable), then convert
    # only the chosen frames, so memory stays at T frames rather than the whole video. Both passes hold every frame
    # to the pixel budget before converting it (`_sized_frames`).
    budget = max_frame_pixels() if budget is None else budget
    where = {"file": path} if where is None else where
    try:
        import av

        with av.open(str(path)) as container:
            if not container.streams.video:
                raise _DecoderFailure("file has no video stream")
            stream = container.streams.video[0]
            _limited_decoder(stream, budget)
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else 0.0
            num_video_frames = sum(1 for _ in _sized_frames(container, stream, budget, where))
    except (_DecoderFailure, DataError):
        raise
    except Exception as err:
        raise _DecoderFailure(f"{type(err).__name__}: {err}") from err
    if num_video_frames == 0:
        raise _DecoderFailure("no decodable frames")

    indices = choose(num_video_frames, fps)
    wanted = set(indices.tolist())
    last_wanted = max(wanted)
    picked: dict[int, np.ndarray] = {}
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            _limited_decoder(stream, budget)
            for position, frame in enumerate(_sized_frames(container, stream, budget, where)):
                if position in wanted:
                    picked[position] = frame.to_ndarray(format="rgb24")
                if position >= last_wanted:
                    break
    except DataError:
        raise
    except Exception as err:
        raise _DecoderFailure(f"{type(err).__name__}: {err}") from err
    missing = sorted(wanted - picked.keys())
    if missing:
        raise _DecoderFailure(f"frames {missing} vanished on the second decoding pass")
    sizes = {picked[i].shape for i in picked}
    if len(sizes) > 1:
        raise _DecoderFailure(f"the chosen frames differ in size ({', '.join(f'{w}x{h}' for h, w, _ in sizes)})")
    frames = np.stack([picked[i] for i in indices.tolist()])
    return _video_frames(frames, indices, fps, num_video_frames)


def _video_frames(frames: np.ndarray, indices: np.ndarray, fps: float, num_video_frames: int) -> VideoFrames:
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] != len(indices):
        raise _DecoderFailure(f"decoded frames have unexpected shape {frames.shape}")
    return VideoFrames(
        frames=frames,
        indices=np.asarray(indices, dtype=np.int64),
        fps=fps,
        num_video_frames=int(num_video_frames),
    )

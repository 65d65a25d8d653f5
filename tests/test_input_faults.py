"""Inputs a hostile or unlucky user hands mapflow, each refused with one line naming the file or option (issue 23):
frames that grow mid-stream past the decoding budget, study options a study does not declare or cannot take, and the
settings that used to end in a raw traceback (read-only store, --device, --threads, a broken study file, a bad
window)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from mapflow.errors import DataError

REPO = Path(__file__).resolve().parent.parent
SMALL = 64  # the first frames' side


# --- videos whose frames change size mid-stream ----------------------------------------------------------------------


def _h264_part(side: int, count: int, first_value: int) -> bytes:
    """A raw H.264 (Annex B) stream of ``count`` flat side x side frames: it carries its own sequence header."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=4)
        stream.width, stream.height, stream.pix_fmt = side, side, "yuv420p"
        for i in range(count):
            image = np.full((side, side, 3), (first_value + 40 * i) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def write_growing_video(path: Path, big_side: int, small_count: int = 4, big_count: int = 4) -> Path:
    """An mp4 whose header and first ``small_count`` frames are 64x64 and whose later frames are big_side x big_side
    (two H.264 sequences in one track, as a concatenation of two clips gives): the header says nothing of the later
    size."""
    import av

    raw = path.with_suffix(".h264")
    raw.write_bytes(_h264_part(SMALL, small_count, 0) + _h264_part(big_side, big_count, 160))
    with av.open(str(raw)) as source, av.open(str(path), "w") as target:
        stream = source.streams.video[0]
        out = target.add_stream_from_template(stream)
        out.time_base = Fraction(1, 4)
        for position, packet in enumerate(p for p in source.demux(stream) if p.size):
            packet.stream, packet.pts, packet.dts, packet.time_base = out, position, position, Fraction(1, 4)
            target.mux(packet)
    raw.unlink()
    return path


def test_a_frame_above_the_budget_after_small_ones_fails_its_sample_naming_frame_and_size(tmp_path, monkeypatch):
    from mapflow.data import video

    budget = SMALL * SMALL * 2  # the first frames fit, the later 128x128 ones (16384 pixels) do not
    monkeypatch.setenv(video.MAX_FRAME_PIXELS_ENV, str(budget))
    path = write_growing_video(tmp_path / "grows.mp4", big_side=128)
    assert video.probe_video(path).width == SMALL  # the header check alone lets it through
    with pytest.raises(DataError) as refused:
        video.read_frames_from_path(path, num_frames=2, sample_id="moving_direction/0007")
    message = str(refused.value)
    assert str(path) in message and "moving_direction/0007" in message
    assert f"frame 4 is 128x128 = 16384 pixels, above the decoding budget of {budget}" in message
    assert "header says 64x64" in message and "context length" not in message


def test_the_pyav_fallback_checks_every_frame_too(tmp_path):
    from mapflow.data import video

    path = write_growing_video(tmp_path / "grows.mp4", big_side=128)
    with pytest.raises(DataError, match=r"frame 4 is 128x128 = 16384 pixels, above the decoding budget of 8192"):
        video._decode_with_pyav(path, lambda count, fps: np.arange(2), 8192, {"file": path})


def test_frames_that_change_size_within_the_budget_are_refused_not_squashed(tmp_path):
    """decord scales every frame to the header's size; mapflow refuses instead of handing on distorted frames."""
    from mapflow.data import video

    path = write_growing_video(tmp_path / "grows.mp4", big_side=96)
    with pytest.raises(DataError, match=r"frames change size mid-stream \(64x64, 96x96\)"):
        video.read_frames_from_path(path, num_frames=2)


def test_a_steady_video_still_decodes_with_both_decoders(tmp_path):
    from mapflow.data import video
    from mapflow.organism.synthetic import write_video

    frames = np.stack([np.full((SMALL, SMALL, 3), 30 * i, np.uint8) for i in range(6)])
    path = tmp_path / "steady.mp4"
    write_video(path, frames)
    decoded = video.read_frames_from_path(path, num_frames=3)
    fallback = video._decode_with_pyav(path, lambda count, fps: decoded.indices, SMALL * SMALL, {"file": path})
    assert decoded.frames.shape == (3, SMALL, SMALL, 3)
    assert np.array_equal(decoded.frames, fallback.frames)


MEMORY_PROBE = textwrap.dedent('''
    import os, sys
    from pathlib import Path
    from mapflow.data import video
    from mapflow.errors import DataError

    def peak_rss() -> int:
        # VmHWM: this process's peak resident memory (ru_maxrss would carry over the parent's peak across exec)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise SystemExit("no VmHWM")

    video.read_frames_from_path(Path(sys.argv[1]), num_frames=2)  # warm up: decoders loaded, small frames decoded
    os.environ[video.MAX_FRAME_PIXELS_ENV] = sys.argv[3]
    before = peak_rss()
    try:
        video.read_frames_from_path(Path(sys.argv[2]), num_frames=2)
        print("decoded")
    except DataError as err:
        print("refused", err)
    print(peak_rss() - before)
''')


def test_refusing_a_big_frame_allocates_less_than_one_such_frame(tmp_path):
    """Peak resident memory (a fresh process, decoders warmed up on a small clip) grows by less than one 4096x4096
    picture in the decoder's own format (YUV 4:2:0, 1.5 bytes a pixel): the frame is refused, never allocated
    (without ffmpeg's ``max_pixels`` limit the same refusal came after a 39 MiB rise: the picture was decoded first)."""
    from mapflow.organism.synthetic import write_video

    if not Path("/proc/self/status").is_file():
        pytest.skip("needs Linux's /proc/self/status (VmHWM) to read peak memory")
    small = tmp_path / "small.mp4"
    write_video(small, np.zeros((4, SMALL, SMALL, 3), np.uint8))
    big_side = 4096
    grows = write_growing_video(tmp_path / "grows.mp4", big_side=big_side, big_count=2)
    assert grows.stat().st_size < 64 * 1024  # a few KB on disk
    probe = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(small), str(grows), str(SMALL * SMALL * 2)],
                           capture_output=True, text=True, cwd=REPO, timeout=120)
    assert probe.returncode == 0, probe.stderr
    lines = probe.stdout.strip().splitlines()
    assert lines[0].startswith("refused") and f"{big_side}x{big_side}" in lines[0]
    one_picture = big_side * big_side * 3 // 2
    assert int(lines[-1]) < one_picture, f"peak memory grew by {int(lines[-1]) / 2**20:.1f} MiB"


def test_a_bad_budget_in_the_environment_is_named(monkeypatch):
    from mapflow.data import video

    monkeypatch.setenv(video.MAX_FRAME_PIXELS_ENV, "lots")
    with pytest.raises(DataError, match=r"MAPFLOW_MAX_FRAME_PIXELS='lots': give a positive whole number"):
        video.max_frame_pixels()

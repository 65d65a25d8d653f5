"""Inputs a hostile or unlucky user hands mapflow, each refused with one line naming the file or option (issue 23):
frames that grow mid-stream past the decoding budget, study options a study does not declare or cannot take, and the
settings that used to end in a raw traceback (read-only store, --device, --threads, a broken study file, a bad
window)."""

from __future__ import annotations

import io
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


MEMORY_PROBE = textwrap.dedent("""
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
""")


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
    probe = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(small), str(grows), str(SMALL * SMALL * 2)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
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


# --- study options: declared, checked before the store exists ---------------------------------------------------------


def cli(*args) -> int:
    from mapflow.cli import main

    return main(["run", *map(str, args), "--limit", "1", "--no-progress", "--threads", "1"])


def refused_in_one_line(capsys, *needles) -> str:
    err = capsys.readouterr().err
    assert err.startswith("mapflow: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def nothing_written(out: Path) -> bool:
    return not out.exists() and not out.with_name(out.name + ".lock").exists()


@pytest.mark.parametrize(
    "study, option, expected",
    [
        ("logit_lens", "lense=released_code", "study logit_lens has no option 'lense'; did you mean 'lens'?"),
        ("answer_probability", "corect_by=token", "has no option 'corect_by'; did you mean 'correct_by'?"),
        ("logit_lens", "lens=bogus", "--option lens=bogus: study logit_lens takes lens = paper | released_code"),
        ("window_sizes", "sizes=1,x", "--option sizes=1,x: study window_sizes takes sizes = k1,k2,... (each >= 1)"),
        ("frame_pairs", "by=diagonal", "takes by = pair | distance"),
    ],
)
def test_an_undeclared_option_or_a_bad_value_is_refused_before_the_store(tmp_path, capsys, study, option, expected):
    out = tmp_path / "out.zarr"
    assert cli(study, "--out", out, "--option", option) == 2
    refused_in_one_line(capsys, expected)
    assert nothing_written(out)


def test_a_missing_required_option_is_refused(tmp_path, capsys):
    out = tmp_path / "out.zarr"
    assert cli("planted_routes", "--out", out) == 2
    refused_in_one_line(capsys, "study planted_routes needs --option routes=<JSON")
    assert nothing_written(out)


def test_mf_run_refuses_an_undeclared_option_and_a_non_mapping(tmp_path):
    import mapflow as mf
    from mapflow.errors import MapflowError

    out = tmp_path / "out.zarr"
    with pytest.raises(MapflowError, match="study cross_frame has no option 'bogus'"):
        mf.run("cross_frame", out=out, options={"bogus": 1}, progress=False)
    with pytest.raises(MapflowError, match="options is a mapping"):
        mf.run("cross_frame", out=out, options=["lens"], progress=False)
    assert nothing_written(out)


def test_a_studys_own_model_checks_still_run_after_the_declared_ones(tmp_path, capsys):
    """head_sweep's window is declared as K >= 1; its hook holds K to the model's 8 layers."""
    out = tmp_path / "out.zarr"
    assert cli("head_sweep", "--out", out, "--option", "window=99") == 2
    refused_in_one_line(capsys, "--option window=99: give 1..8 layers")
    assert nothing_written(out)


def _study_modules():
    from mapflow.analysis.runner import available_studies, load_study

    return {name: load_study(name) for name in available_studies()}


def test_every_shipped_study_declares_each_option_it_reads_with_the_default_it_reads():
    """Every ``option("name"...)`` read in a study is declared (or common); its default in the read is the declared
    one (`default("name")` from mapflow.differences, a constant holding it, or ``OPTIONS["name"].default``); every
    declared option is read; the demo suite's options pass the check."""
    import re

    from mapflow.analysis.declaration import declaration_of
    from mapflow.analysis.option_checks import COMMON_OPTION_NAMES, check_study_options
    from mapflow.analysis.options import StudyOption

    for name, study in _study_modules().items():
        declared_options = declaration_of(study).options
        assert declared_options is not None and all(isinstance(o, StudyOption) for o in declared_options.values())
        source = (REPO / "studies" / f"{name}.py").read_text()
        reads = re.findall(r'option\("(\w+)"(?:,\s*((?:[^()]|\([^()]*\)|\[[^\]]*\])*))?\)', source)
        read_names = {key for key, _ in reads}
        assert read_names <= set(declared_options) | set(COMMON_OPTION_NAMES), (
            name,
            read_names - set(declared_options),
        )
        assert set(declared_options) <= read_names, (name, set(declared_options) - read_names)
        for key, given in reads:
            declared = declared_options[key].default
            given = given.strip()
            constant = re.fullmatch(r"[A-Z_]+", given) and re.search(rf"^{given} = (.+)$", source, re.M)
            through_constant = constant and (
                constant.group(1) in (f'default("{key}")', repr(declared)) or f'default("{key}")' in constant.group(1)
            )
            assert (
                (given == "" and declared is None)
                or given in (f'default("{key}")', f'OPTIONS["{key}"].default')
                or through_constant
            ), f"{name} reads --option {key} with {given!r}, declared default {declared!r}"
        for demo in declaration_of(study).demo:
            check_study_options(study, name, {k: v for k, v in (demo.options or {}).items() if k != "from"})


def test_declared_defaults_are_the_differences_lists():
    from mapflow.analysis.option_checks import declared_options
    from mapflow.differences import DIFFERENCES

    studies = _study_modules()
    for setting in (d.setting for d in DIFFERENCES if d.setting is not None and d.setting.kind == "option"):
        names = studies if setting.studies == ("*",) else setting.studies
        for name in names:
            declared = declared_options(studies[name])[setting.key]
            assert declared.default == setting.default, (name, setting.key)


def test_mapflow_studies_lists_every_declared_option(capsys):
    from mapflow.analysis.option_checks import describe_options
    from mapflow.cli import main

    assert main(["studies"]) == 0
    listing = capsys.readouterr().out
    assert "--option lens=paper | released_code (default paper)" in listing
    assert "every study also takes:" in listing and "--option correct_by=text | token (default text)" in listing
    blocks: dict[str, list[str]] = {}  # study name -> the option lines listed under it
    for line in listing.splitlines():
        if line and not line.startswith(" "):
            blocks[line.split()[0]] = []
        elif line.strip():
            list(blocks.values())[-1].append(line.strip())
    for name, study in _study_modules().items():
        assert blocks[name] == [f"--option {line}" for line in describe_options(study)], name


def test_a_study_without_declarations_warns_that_its_options_go_unchecked():
    from mapflow.analysis.option_checks import check_study_options
    from mapflow.errors import MapflowError

    def notebook_study(ctx):
        return None

    with pytest.warns(UserWarning, match="declares no options, so --option anything cannot be checked"):
        check_study_options(notebook_study, "notebook_study", {"anything": "1"})
    with pytest.raises(MapflowError, match="takes correct_by = text | token"):  # the common ones are still checked
        check_study_options(notebook_study, "notebook_study", {"correct_by": "letters"})


# --- settings that used to end in a raw traceback ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--device", "bogus"], "--device 'bogus': not a device"),
        (["--device", "cuda:9"], "--device cuda:9: this machine has"),
        (["--threads", "-1"], "--threads -1: give a positive number of CPU threads"),
        (["--threads", "0"], "--threads 0: give a positive number of CPU threads"),
    ],
)
def test_a_bad_device_or_thread_count_is_one_line(tmp_path, capsys, flags, expected):
    from mapflow.cli import main

    out = tmp_path / "out.zarr"
    assert main(["run", "accuracy", "--out", str(out), "--limit", "1", "--no-progress", *flags]) == 2
    refused_in_one_line(capsys, expected)
    assert nothing_written(out)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("def run(ctx)\n    return None\n", "line 1: expected ':' (a syntax error)"),
        (
            "import json\nimport no_such_module_for_mapflow\n\ndef run(ctx):\n    return None\n",
            "line 2: cannot import: No module named 'no_such_module_for_mapflow'",
        ),
        ("LIMIT = 1 / 0\n\ndef run(ctx):\n    return None\n", "line 1: raised ZeroDivisionError while loading"),
    ],
)
def test_a_broken_study_file_is_one_line_naming_file_and_line(tmp_path, capsys, source, expected):
    study = tmp_path / "my_study.py"
    study.write_text(source)
    out = tmp_path / "out.zarr"
    assert cli(study, "--out", out) == 2
    refused_in_one_line(capsys, f"study file {study}, {expected}")
    assert nothing_written(out)


def test_mf_run_refuses_a_window_or_frames_of_the_wrong_type(tmp_path):
    import mapflow as mf
    from mapflow.errors import MapflowError

    with pytest.raises(MapflowError, match=r"--window 'abc': give the knockout window size as a whole number"):
        mf.run("cross_frame", window="abc", progress=False)
    with pytest.raises(MapflowError, match=r"--frames '8': give a positive number of frames"):
        mf.run("cross_frame", frames="8", progress=False)
    with pytest.raises(MapflowError, match=r"--window-style 'diagonal'"):
        mf.run("cross_frame", window_style="diagonal", progress=False)


def _fake_store(path: Path) -> Path:
    path.mkdir()
    (path / ".zgroup").write_text('{"zarr_format": 2}')
    (path / "p_base").mkdir()
    (path / "p_base" / "0").write_bytes(b"\0")
    return path


def test_a_store_the_kernel_will_not_let_us_write_is_refused_before_loading(tmp_path, capsys, monkeypatch):
    """The check asks the kernel (os.access); here it is told that one folder inside the store is read-only, as a
    read-only mount or `chattr +i` makes it (root ignores permission bits, so chmod alone proves nothing)."""
    import os

    import mapflow as mf
    from mapflow.errors import MapflowError

    store = _fake_store(tmp_path / "done.zarr")
    before = sorted((p.relative_to(store), p.stat().st_mtime_ns) for p in store.rglob("*"))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != store / "p_base" and real_access(p, mode, **kw))
    assert cli("accuracy", "--out", store) == 2
    refused_in_one_line(capsys, f"--out {store}: {store / 'p_base'} is not writable (part of the store)")
    with pytest.raises(MapflowError, match="is not writable"):
        mf.run("accuracy", out=store, progress=False)
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != tmp_path and real_access(p, mode, **kw))
    new = tmp_path / "new.zarr"
    assert cli("accuracy", "--out", new) == 2
    refused_in_one_line(capsys, f"{tmp_path} is not writable (the folder that holds the store and its lock file)")
    assert sorted((p.relative_to(store), p.stat().st_mtime_ns) for p in store.rglob("*")) == before
    assert nothing_written(new) and not (tmp_path / "done.zarr.lock").exists()


def test_resuming_an_immutable_store_is_refused(tmp_path, capsys):
    """The real thing where the file system allows it: `chattr +i` stops even root."""
    store = _fake_store(tmp_path / "done.zarr")
    if subprocess.run(["chattr", "+i", str(store)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (no tool, file system or capability)")
    try:
        assert cli("accuracy", "--out", store) == 2
        refused_in_one_line(capsys, f"--out {store}: {store} is not writable")
    finally:
        subprocess.run(["chattr", "-i", str(store)], check=True)
    assert not (tmp_path / "done.zarr.lock").exists()

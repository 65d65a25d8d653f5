"""A tiny, deterministic TVBench-layout dataset with real mp4 videos.

Two tasks whose answers need more than one frame (a single frame shows neither a direction
of motion nor the order of two scenes), so the pipeline can be exercised end to end without
downloading TVBench. Everything is drawn from ``numpy.random.default_rng(seed)``.

Regenerate the shipped copy with ``python -m mapflow.organism.synthetic data/tvbench-mini``.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import temporal_tasks

RGB = tuple[int, int, int]

# Tried in order: libx264 gives small faithful files; mpeg4 ships with every FFmpeg build.
ENCODER_PREFERENCE: tuple[str, ...] = ("libx264", "mpeg4")
# x264's default rate control (CRF with macroblock-tree lookahead) gave different bytes and
# pixels from run to run here; a constant quantiser without mb-tree is reproducible.
_ENCODER_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"qp": "18", "x264-params": "no-mbtree=1"},
}

MOVING_DIRECTION_QUESTION = "Which direction does the {color} square move in the video?"
MOVING_DIRECTION_CANDIDATES: tuple[str, ...] = (
    "Up and to the left.",
    "Up and to the right.",
    "Down and to the left.",
    "Down and to the right.",
)
# (dx, dy) in image coordinates, where y grows downwards.
_DIRECTION_STEPS: dict[str, tuple[int, int]] = {
    "Up and to the left.": (-1, -1),
    "Up and to the right.": (1, -1),
    "Down and to the left.": (-1, 1),
    "Down and to the right.": (1, 1),
}
SQUARE_COLORS: dict[str, RGB] = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 215, 40),
}
_SQUARE_BACKGROUND: RGB = (70, 70, 70)

SCENE_TRANSITION_QUESTION = "What's the right option for how the scenes in the video change?"
SCENE_NAMES: tuple[str, ...] = ("forest", "beach", "desert", "city", "snow")


# --- video writing ----------------------------------------------------------------------


@functools.cache
def pick_video_encoder() -> str:
    """First encoder in `ENCODER_PREFERENCE` that can actually encode an mp4 here."""
    failures = []
    for codec in ENCODER_PREFERENCE:
        try:
            probe = np.zeros((2, 16, 16, 3), dtype=np.uint8)
            _encode_mp4(io.BytesIO(), probe, fps=8, codec=codec)
            return codec
        except Exception as err:  # any failure just means "try the next encoder"
            failures.append(f"{codec}: {type(err).__name__}: {err}")
    raise RuntimeError(f"no usable mp4 encoder in PyAV ({'; '.join(failures)})")


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: int = 8,
    codec: str | None = None,
    *,
    qp: int | None = None,
    pix_fmt: str = "yuv420p",
) -> Path:
    """Write uint8 RGB frames (T, H, W, 3) with even H and W as an mp4 (yuv420p by default).

    `qp` overrides libx264's constant quantiser (0 = lossless in YUV, default 18); other
    encoders ignore it. ``pix_fmt="yuv444p"`` keeps full-resolution colour (yuv420p halves
    it, which smears the edges of few-pixel shapes by up to ~120 levels).
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"yuv420p needs even height and width, got {frames.shape[1:3]}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        _encode_mp4(handle, frames, fps=fps, codec=codec or pick_video_encoder(), qp=qp, pix_fmt=pix_fmt)
    return path


def _encode_mp4(
    target, frames: np.ndarray, fps: int, codec: str, qp: int | None = None, pix_fmt: str = "yuv420p"
) -> None:
    import av

    options = dict(_ENCODER_OPTIONS.get(codec, {}))
    if qp is not None and codec == "libx264":
        options["qp"] = str(qp)
    with av.open(target, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width = frames.shape[2]
        stream.height = frames.shape[1]
        stream.pix_fmt = pix_fmt
        stream.codec_context.thread_count = 1  # part of keeping the bytes reproducible
        if codec == "mpeg4":
            stream.bit_rate = 2_000_000  # the default bitrate smears small coloured shapes
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# --- moving_direction -------------------------------------------------------------------


def moving_square_frames(
    direction: str, color: RGB, size: int, num_video_frames: int, rng: np.random.Generator
) -> np.ndarray:
    """A square travelling diagonally from one corner region towards the opposite one."""
    dx, dy = _DIRECTION_STEPS[direction]
    side = size // 4
    far = size - side - 1  # last top-left coordinate that keeps the square inside
    jitter = max(1, size // 16)

    def endpoints(step: int) -> tuple[int, int]:
        near = int(rng.integers(0, jitter + 1))
        return (near, far - near) if step > 0 else (far - near, near)

    x_from, x_to = endpoints(dx)
    y_from, y_to = endpoints(dy)
    frames = np.empty((num_video_frames, size, size, 3), dtype=np.uint8)
    frames[:] = _SQUARE_BACKGROUND
    for t in range(num_video_frames):
        progress = t / (num_video_frames - 1)
        x = round(x_from + (x_to - x_from) * progress)
        y = round(y_from + (y_to - y_from) * progress)
        frames[t, y : y + side, x : x + side] = color
    return frames


def _moving_direction_entries(
    video_dir: Path, per_task: int, size: int, num_video_frames: int, fps: int, rng: np.random.Generator
) -> list[dict]:
    directions = _balanced(MOVING_DIRECTION_CANDIDATES, per_task, rng)
    color_names = list(SQUARE_COLORS)
    entries = []
    for i, direction in enumerate(directions):
        color = color_names[int(rng.integers(len(color_names)))]
        frames = moving_square_frames(direction, SQUARE_COLORS[color], size, num_video_frames, rng)
        name = f"moving_direction_{i:04d}.mp4"
        write_video(video_dir / name, frames, fps)
        entries.append(
            {
                "video": name,
                "question": MOVING_DIRECTION_QUESTION.format(color=color),
                "candidates": list(MOVING_DIRECTION_CANDIDATES),
                "answer": direction,
            }
        )
    return entries


# --- scene_transition -------------------------------------------------------------------


def scene_frame(scene: str, size: int) -> np.ndarray:
    """One still of `scene`: a background colour with a pattern typical of it."""
    frame = np.empty((size, size, 3), dtype=np.uint8)
    ys, xs = np.mgrid[0:size, 0:size]
    step = max(4, size // 8)
    if scene == "forest":
        frame[:] = (30, 100, 35)
        frame[:, (xs[0] % (2 * step)) < step // 2] = (100, 65, 30)  # tree trunks
    elif scene == "beach":
        frame[:] = (230, 210, 150)
        frame[: size // 3] = (40, 120, 200)  # sea along the top
    elif scene == "desert":
        frame[:] = (220, 150, 60)
        frame[((xs + 2 * ys) % (2 * step)) < step // 2] = (170, 105, 40)  # dune ridges
    elif scene == "city":
        frame[:] = (110, 110, 125)
        frame[size // 3 :, (xs[0] % (2 * step)) < step] = (55, 55, 70)  # buildings
        frame[(ys % step == step // 2) & (xs % step == step // 2) & (ys > size // 3)] = (240, 220, 90)
    elif scene == "snow":
        frame[:] = (240, 245, 250)
        frame[(ys % step < 2) & (xs % step < 2)] = (160, 195, 230)  # falling flakes
    else:
        raise ValueError(f"unknown scene {scene!r}; choose one of {SCENE_NAMES}")
    return frame


def scene_transition_frames(first: str, second: str, size: int, num_video_frames: int) -> np.ndarray:
    """First half of the video shows `first`, the rest shows `second`."""
    switch = num_video_frames // 2
    frames = np.empty((num_video_frames, size, size, 3), dtype=np.uint8)
    frames[:switch] = scene_frame(first, size)
    frames[switch:] = scene_frame(second, size)
    return frames


def _scene_transition_entries(
    video_dir: Path, per_task: int, size: int, num_video_frames: int, fps: int, rng: np.random.Generator
) -> list[dict]:
    # Balance where the right answer sits, so "always pick A" scores exactly chance.
    answer_positions = _balanced((0, 1), per_task, rng)
    entries = []
    for i, answer_position in enumerate(answer_positions):
        first, second = (SCENE_NAMES[int(k)] for k in rng.choice(len(SCENE_NAMES), size=2, replace=False))
        frames = scene_transition_frames(first, second, size, num_video_frames)
        name = f"scene_transition_{i:04d}.mp4"
        write_video(video_dir / name, frames, fps)
        right = f"From the {first} to the {second}."
        wrong = f"From the {second} to the {first}."
        candidates = [right, wrong] if answer_position == 0 else [wrong, right]
        entries.append(
            {
                "video": name,
                "question": SCENE_TRANSITION_QUESTION,
                "candidates": candidates,
                "answer": right,
            }
        )
    return entries


# --- dataset ----------------------------------------------------------------------------

_TASK_BUILDERS: dict[str, Callable[..., list[dict]]] = {
    "moving_direction": _moving_direction_entries,
    "scene_transition": _scene_transition_entries,
}


def write_tiny_tvbench(
    root: str | Path,
    per_task: int = 4,
    seed: int = 0,
    size: int = 64,
    num_video_frames: int = 16,
    fps: int = 8,
) -> Path:
    """Write ``{root}/json/{task}.json`` and ``{root}/video/{task}/*.mp4`` for two tasks."""
    if per_task < 1:
        raise ValueError(f"per_task must be >= 1, got {per_task}")
    if size < 16 or size % 2:
        raise ValueError(f"size must be even and >= 16, got {size}")
    if num_video_frames < 2:
        raise ValueError(f"num_video_frames must be >= 2, got {num_video_frames}")
    if fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")

    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "json").mkdir(parents=True, exist_ok=True)
    for task, build_entries in _TASK_BUILDERS.items():
        video_dir = root / "video" / task
        video_dir.mkdir(parents=True, exist_ok=True)
        entries = build_entries(video_dir, per_task, size, num_video_frames, fps, rng)
        text = json.dumps(entries, indent=2, ensure_ascii=False) + "\n"
        (root / "json" / f"{task}.json").write_text(text, encoding="utf-8")
    return root


def _balanced(values: tuple, count: int, rng: np.random.Generator) -> list:
    """`count` items cycling through `values` (each used equally often), in seeded random order."""
    cycled = [values[i % len(values)] for i in range(count)]
    return [cycled[int(k)] for k in rng.permutation(count)]


# --- temporal benchmark (the five analysis tasks; see mapflow.organism.temporal_tasks) -----

# yuv444p at qp 0 is lossless in YUV: decoded pixels stay within 1 level of the rendered
# ones (yuv420p would smear few-pixel shapes' colour edges), and the files are small.
TEMPORAL_QP = 0
TEMPORAL_PIX_FMT = "yuv444p"


@dataclass(frozen=True, eq=False)
class BenchmarkEntry:
    """One item of the written temporal benchmark, with its options in file order."""

    task: str
    video: str  # file name inside video/{task}/
    item: temporal_tasks.TemporalItem
    candidates: tuple[str, ...]

    def to_json(self) -> dict:
        return {
            "video": self.video,
            "question": self.item.question,
            "candidates": list(self.candidates),
            "answer": self.item.answer,
        }


def temporal_benchmark_entries(
    per_task: int = 40,
    seed: int = 1234,
    tasks: Sequence[str] = temporal_tasks.TASKS,
    shuffle_options: bool = True,
) -> Iterator[BenchmarkEntry]:
    """The items `write_temporal_benchmark` writes, in order, drawn from one seeded rng.

    Answer classes are exactly balanced per task; with `shuffle_options` the options are
    shuffled per item and the position of the right one is balanced too.
    """
    tasks = tuple(tasks)
    unknown = [task for task in tasks if task not in temporal_tasks.TASKS]
    if unknown:
        raise ValueError(f"unknown temporal task(s) {unknown}; choose from {temporal_tasks.TASKS}")
    if per_task < 1:
        raise ValueError(f"per_task must be >= 1, got {per_task}")
    rng = np.random.default_rng(seed)
    for task in tasks:
        classes = tuple(range(temporal_tasks.NUM_CANDIDATES[task]))
        answer_classes = _balanced(classes, per_task, rng)
        answer_positions = _balanced(classes, per_task, rng)
        for i, (answer_class, position) in enumerate(zip(answer_classes, answer_positions)):
            item = temporal_tasks.make_item(task, rng, answer_index=answer_class)
            candidates = tuple(item.candidates)
            if shuffle_options:
                candidates = _shuffled_options(item.candidates, item.answer_index, position, rng)
            yield BenchmarkEntry(task, f"{task}_{i:04d}.mp4", item, candidates)


def write_temporal_benchmark(
    root: str | Path,
    per_task: int = 40,
    seed: int = 1234,
    tasks: Sequence[str] = temporal_tasks.TASKS,
    shuffle_options: bool = True,
) -> Path:
    """Write the synthetic temporal benchmark in TVBench layout under `root`.

    ``json/{task}.json``, ``video/{task}/{task}_{i:04d}.mp4`` (VIDEO_FRAMES frames at FPS) and
    a README.md; the items are `temporal_benchmark_entries(per_task, seed, tasks, shuffle_options)`.
    """
    entries = list(temporal_benchmark_entries(per_task, seed, tasks, shuffle_options))
    root = Path(root)
    codec = pick_video_encoder()
    pix_fmt = TEMPORAL_PIX_FMT if codec == "libx264" else "yuv420p"  # mpeg4 has no 4:4:4
    (root / "json").mkdir(parents=True, exist_ok=True)
    for task in dict.fromkeys(entry.task for entry in entries):
        task_entries = [entry for entry in entries if entry.task == task]
        for entry in task_entries:
            path = root / "video" / task / entry.video
            write_video(path, entry.item.frames, fps=temporal_tasks.FPS, qp=TEMPORAL_QP, pix_fmt=pix_fmt)
        text = json.dumps([entry.to_json() for entry in task_entries], indent=2, ensure_ascii=False) + "\n"
        (root / "json" / f"{task}.json").write_text(text, encoding="utf-8")
    _write_temporal_readme(root, per_task, seed, tuple(tasks), shuffle_options)
    return root


def _shuffled_options(
    candidates: Sequence[str], answer_index: int, position: int, rng: np.random.Generator
) -> tuple[str, ...]:
    """The right option at `position`, the others in a random order around it."""
    others = [c for k, c in enumerate(candidates) if k != answer_index]
    others = [others[int(k)] for k in rng.permutation(len(others))]
    return tuple(others[:position] + [candidates[answer_index]] + others[position:])


def _write_temporal_readme(root: Path, per_task: int, seed: int, tasks: Sequence[str], shuffle_options: bool) -> None:
    size = temporal_tasks.FRAME_SIZE
    lines = [
        "# Synthetic temporal benchmark",
        "",
        f"TVBench analysis tasks ({', '.join(tasks)}) on tiny rendered videos ({size}x{size} px, "
        f"{temporal_tasks.VIDEO_FRAMES} frames at {temporal_tasks.FPS} fps; models see the odd frames).",
        f"{per_task} items per task, seed {seed}; answer classes balanced per task; options "
        + ("shuffled (answer positions balanced)." if shuffle_options else "in each task's canonical order."),
        "Regenerate (OUTDIR = this folder): "
        f"`python -m mapflow.organism.synthetic OUTDIR --benchmark temporal --per-task {per_task} --seed {seed}"
        + ("`" if shuffle_options else " --canonical-options`"),
        "Generator: `mapflow/organism/temporal_tasks.py`; writer: `mapflow/organism/synthetic.py`.",
    ]
    (root / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    """``python -m mapflow.organism.synthetic`` (its arguments: `mapflow.cli.organism.synthetic_parser`)."""
    from ..cli.organism import synthetic_parser

    args = synthetic_parser().parse_args(argv)
    if args.benchmark == "temporal":
        per_task = 40 if args.per_task is None else args.per_task
        seed = 1234 if args.seed is None else args.seed
        root = write_temporal_benchmark(
            args.outdir, per_task=per_task, seed=seed, shuffle_options=not args.canonical_options
        )
        total = per_task * len(temporal_tasks.TASKS)
        print(f"wrote {total} samples to {root} (encoder {pick_video_encoder()}, seed {seed})")
        return
    per_task = 4 if args.per_task is None else args.per_task
    seed = 0 if args.seed is None else args.seed
    root = write_tiny_tvbench(args.outdir, per_task=per_task, seed=seed)
    print(f"wrote {2 * per_task} samples to {root} (encoder {pick_video_encoder()}, seed {seed})")


if __name__ == "__main__":
    main()

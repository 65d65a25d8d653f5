"""A synthetic temporal-reasoning benchmark with the five TVBench analysis tasks.

Each item is a tiny video (`VIDEO_FRAMES` frames of `FRAME_SIZE`² RGB) of coloured squares and
circles plus a multiple-choice question whose answer needs more than one frame. Items come from
`make_item(task, rng)` as numpy arrays (to train tiny "model organisms" on the fly) and
`mapflow.organism.synthetic.write_temporal_benchmark` writes them as mp4 + TVBench-layout JSON.

Design rules (lessons of the prototype, see the model-organism reference notes):
* the answer class is drawn uniformly first, then a video is built for it;
* for the reversible tasks the second class of a pair is the time reversal of a video built for
  the first one, so every single frame has the same distribution under both classes and only
  its position in time (not its content) can hint at the answer;
* static single-frame cues (presence of an object, the first scene) are kept to a minority of
  items where the task allows it;
* everything is drawn from the caller's `numpy.random.Generator`, so a seed fixes the item.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..data.video import segment_midpoint_indices

RGB = tuple[int, int, int]

TASKS: tuple[str, ...] = (
    "action_antonym",
    "action_sequence",
    "moving_direction",
    "object_count",
    "scene_transition",
)
# Tasks whose answer flips when the video plays backwards (`make_item(..., reverse=True)`).
REVERSIBLE_TASKS: tuple[str, ...] = ("action_antonym", "moving_direction", "scene_transition")

FRAME_SIZE = 32
# 17, not 16: the paper's segment-midpoint rule over 16 frames picks [0,2,4,6,8,9,11,13]
# (uneven steps, and not closed under time reversal); over 17 frames it picks the odd
# indices 1,3,...,15, evenly spaced and mapped onto themselves by reversal (i -> 16 - i).
VIDEO_FRAMES = 17
SEEN_FRAMES = 8
FPS = 8

BACKGROUND: RGB = (40, 40, 40)
# The processor subtracts the background colour so a plain background becomes exactly 0.
# In the prototype, uncentred pixels made the constant dark background dominate every patch
# embedding (CLIP's patch embedding has no bias), so video tokens were ~constant and the
# language model ignored them; centring on the background fixed that.
PIXEL_MEAN: tuple[float, float, float] = tuple(c / 255 for c in BACKGROUND)  # type: ignore[assignment]
PIXEL_STD: tuple[float, float, float] = (0.25, 0.25, 0.25)

COLORS: dict[str, RGB] = {
    "red": (230, 45, 45),
    "green": (45, 205, 70),
    "blue": (60, 110, 255),
    "yellow": (240, 220, 50),
    "cyan": (50, 215, 225),
    "purple": (190, 70, 230),
}
SHAPES: tuple[str, ...] = ("square", "circle")
OBJECT_SIZES = (5, 8)  # inclusive range of an ordinary object's side / diameter in pixels

# Mean absolute change (0-255 units, over a cell's pixels and channels) above which a cell
# counts as "changing". A 5 px object of the least contrasting colour shifted by 2 px (the
# slowest motion between two seen frames) changes a 16x16 cell by about 3-4; codec noise
# at the benchmark's quantiser stays far below 1.
MOTION_THRESHOLD = 1.0

ANTONYM_QUESTION = "What happens to the {color} {shape}?"
SIZE_PAIR: tuple[str, str] = ("It grows.", "It shrinks.")
PRESENCE_PAIR: tuple[str, str] = ("It appears.", "It disappears.")
# Presence events can be read off one frame (is the object there?), so they are a minority.
PRESENCE_SHARE = 1 / 3

SEQUENCE_QUESTION = "What happened first?"
SEQUENCE_EVENTS: tuple[str, ...] = ("appears", "disappears", "grows", "shrinks", "starts moving")
# Half weight for presence events: one middle frame shows whether they have happened yet.
_SEQUENCE_EVENT_WEIGHTS = np.array([0.5, 0.5, 1.0, 1.0, 1.0]) / 4.0
_FIRST_EVENT_FRAMES = (3, 6)  # inclusive range of the earlier event's frame
_SECOND_EVENT_FRAMES = (10, 13)

DIRECTION_QUESTION = "Which direction does the {color} {shape} move?"
DIRECTION_CANDIDATES: tuple[str, ...] = (
    "Up and to the left.",
    "Up and to the right.",
    "Down and to the left.",
    "Down and to the right.",
)
# (x, y) signs per candidate, y grows downwards.
_DIRECTION_SIGNS: tuple[tuple[int, int], ...] = ((-1, -1), (1, -1), (-1, 1), (1, 1))
_TARGET_SPEED = (1.0, 1.5)  # px per frame along each axis

COUNT_QUESTION = "How many objects are moving when the video begins?"
COUNT_CANDIDATES: tuple[str, ...] = ("0", "1", "2", "3")
COUNT_OBJECTS = 3
_COUNT_SWITCH_FRAMES = (6, 10)  # movers stop / starters start here; seen frames 1,3,5 are before
# With this probability the late movers are exactly the early-static objects (every object
# moves in exactly one half, so "which objects ever moved" says nothing); otherwise the number
# of late movers is uniform and independent of the answer (so the end says nothing).
_COUNT_COMPLEMENT_SHARE = 0.25

SCENE_QUESTION = "How does the scene change?"
SCENE_NAMES: tuple[str, ...] = ("beach", "city", "desert", "forest", "night", "snow")
_SCENE_SWITCH_FRAMES = (5, 11)  # first frame of the second scene

_FLIP_ANSWER: dict[str, Callable[[int], int]] = {
    "action_antonym": lambda i: 1 - i,
    "moving_direction": lambda i: 3 - i,  # up-left <-> down-right, up-right <-> down-left
    "scene_transition": lambda i: 1 - i,
}
NUM_CANDIDATES: dict[str, int] = {
    "action_antonym": 2,
    "action_sequence": 2,
    "moving_direction": 4,
    "object_count": 4,
    "scene_transition": 2,
}
_MAX_PLACEMENT_TRIES = 20  # redraws of one object before the scene starts again
_MAX_RESTARTS = 10


# --- items ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # eq=False: comparing numpy frames with == is ambiguous
class TemporalItem:
    """One question about one video; `candidates` are in the task's canonical order."""

    task: str
    question: str
    candidates: tuple[str, ...]
    answer_index: int
    frames: np.ndarray  # uint8 (VIDEO_FRAMES, FRAME_SIZE, FRAME_SIZE, 3)

    @property
    def answer(self) -> str:
        return self.candidates[self.answer_index]

    @property
    def seen_frames(self) -> np.ndarray:
        """The frames a model gets: the segment midpoints (odd indices 1..15)."""
        return self.frames[seen_frame_indices()]


def seen_frame_indices(fps: float = FPS) -> np.ndarray:
    """Indices of the frames the evaluation reads from a benchmark video: [1, 3, ..., 15]."""
    return segment_midpoint_indices(VIDEO_FRAMES, fps, SEEN_FRAMES)


def make_item(
    task: str,
    rng: np.random.Generator,
    *,
    reverse: bool = False,
    answer_index: int | None = None,
) -> TemporalItem:
    """A fresh item of `task`; `answer_index` forces the answer class (else drawn uniformly).

    `reverse=True` (reversible tasks only) plays the video backwards and flips the answer;
    a forced `answer_index` is the answer of the returned, reversed item.
    """
    if task not in _BUILDERS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    if reverse and task not in REVERSIBLE_TASKS:
        raise ValueError(f"task {task!r} has no reversed form; reversible: {REVERSIBLE_TASKS}")
    num_candidates = NUM_CANDIDATES[task]
    if answer_index is None:
        answer_index = int(rng.integers(num_candidates))
    elif not 0 <= answer_index < num_candidates:
        raise ValueError(f"answer_index must be in [0, {num_candidates}), got {answer_index}")
    if reverse:
        forward = _BUILDERS[task](rng, _FLIP_ANSWER[task](answer_index))
        return reversed_item(forward)
    return _BUILDERS[task](rng, answer_index)


def reversed_item(item: TemporalItem) -> TemporalItem:
    """The same item played backwards, with the answer that the reversed video has."""
    if item.task not in REVERSIBLE_TASKS:
        raise ValueError(f"task {item.task!r} has no reversed form; reversible: {REVERSIBLE_TASKS}")
    return replace(
        item,
        frames=np.ascontiguousarray(item.frames[::-1]),
        answer_index=_FLIP_ANSWER[item.task](item.answer_index),
    )


def normalize_pixels(frames: np.ndarray) -> np.ndarray:
    """uint8 frames (..., 3) -> float32 with the background at 0 (what the processor does)."""
    mean = np.asarray(PIXEL_MEAN, dtype=np.float32)
    std = np.asarray(PIXEL_STD, dtype=np.float32)
    return (np.asarray(frames, dtype=np.float32) / 255.0 - mean) / std


def motion_map(frames_seen: np.ndarray, grid: int = 2, threshold: float = MOTION_THRESHOLD) -> np.ndarray:
    """(T, grid, grid) bool: did each cell change since the previous frame? Row 0 is False.

    `frames_seen` is (T, H, W, 3) in 0-255 units with H and W divisible by `grid`; the label
    is the mean absolute difference over the cell's pixels and channels above `threshold`.
    """
    frames = np.asarray(frames_seen, dtype=np.float32)
    steps, height, width = frames.shape[:3]
    if height % grid or width % grid:
        raise ValueError(f"frame size {height}x{width} is not divisible by grid {grid}")
    change = np.abs(frames[1:] - frames[:-1]).mean(axis=-1)
    cells = change.reshape(steps - 1, grid, height // grid, grid, width // grid).mean(axis=(2, 4))
    moving = np.zeros((steps, grid, grid), dtype=bool)
    moving[1:] = cells > threshold
    return moving


# --- objects and rendering --------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Track:
    """One object over the whole video (per-frame centre, size and visibility)."""

    color: str
    shape: str
    cx: np.ndarray  # float, (VIDEO_FRAMES,)
    cy: np.ndarray
    size: np.ndarray  # int
    visible: np.ndarray  # bool

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


@functools.cache
def _shape_mask(shape: str, size: int) -> np.ndarray:
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    centre = (size - 1) / 2
    ys, xs = np.mgrid[0:size, 0:size]
    return (xs - centre) ** 2 + (ys - centre) ** 2 <= (size / 2) ** 2 + 0.25


def _render(tracks: Sequence[_Track], base: np.ndarray | None = None) -> np.ndarray:
    """Draw `tracks` in order (later ones on top) over `base` (default: plain background)."""
    if base is None:
        frames = np.empty((VIDEO_FRAMES, FRAME_SIZE, FRAME_SIZE, 3), dtype=np.uint8)
        frames[:] = BACKGROUND
    else:
        frames = base.copy()
    for track in tracks:
        color = COLORS[track.color]
        x0 = np.floor(track.cx - track.size / 2 + 0.5).astype(int)
        y0 = np.floor(track.cy - track.size / 2 + 0.5).astype(int)
        for t in np.flatnonzero(track.visible & (track.size > 0)):
            size = int(track.size[t])
            x, y = int(x0[t]), int(y0[t])
            if x < 0 or y < 0 or x + size > FRAME_SIZE or y + size > FRAME_SIZE:
                raise AssertionError(f"{track.name} leaves the frame at t={t} ({x}, {y}, size {size})")
            frames[t, y : y + size, x : x + size][_shape_mask(track.shape, size)] = color
    return frames


def _reverse_track(track: _Track) -> _Track:
    return _Track(track.color, track.shape, track.cx[::-1], track.cy[::-1], track.size[::-1], track.visible[::-1])


def _pick_looks(rng: np.random.Generator, count: int) -> list[tuple[str, str]]:
    """`count` (colour, shape) pairs with colours unique within the video."""
    colors = list(COLORS)
    picked = rng.choice(len(colors), size=count, replace=False)
    return [(colors[int(k)], SHAPES[int(rng.integers(len(SHAPES)))]) for k in picked]


def _object_size(rng: np.random.Generator) -> int:
    return int(rng.integers(OBJECT_SIZES[0], OBJECT_SIZES[1] + 1))


def _frames() -> np.ndarray:
    return np.arange(VIDEO_FRAMES)


def _constant_sizes(size: int) -> np.ndarray:
    return np.full(VIDEO_FRAMES, size, dtype=int)


def _ramp_sizes(start: int, end: int, first: int, last: int) -> np.ndarray:
    """`start` until frame `first`, `end` from frame `last`, linear in between."""
    return np.rint(np.interp(_frames(), [first, last], [start, end])).astype(int)


def _velocities(velocity: tuple[float, float], moving_steps: np.ndarray) -> np.ndarray:
    """(VIDEO_FRAMES - 1, 2) per-step displacement; step i goes from frame i to i + 1."""
    steps = np.zeros((VIDEO_FRAMES - 1, 2))
    steps[moving_steps] = velocity
    return steps


def _all_steps() -> np.ndarray:
    return np.ones(VIDEO_FRAMES - 1, dtype=bool)


def _steps_from(frame: int) -> np.ndarray:
    """Steps taken after `frame` (the object is still at `frame`, moved at `frame + 1`)."""
    return np.arange(VIDEO_FRAMES - 1) >= frame


def _steps_until(frame: int) -> np.ndarray:
    """Steps that end at or before `frame` (the object rests from `frame` on)."""
    return np.arange(VIDEO_FRAMES - 1) < frame


def _random_velocity(rng: np.random.Generator, speed: tuple[float, float]) -> tuple[float, float]:
    """One of the 8 compass directions, `speed` px/frame along each moving axis."""
    while True:
        sx, sy = (int(s) for s in rng.integers(-1, 2, size=2))
        if sx or sy:
            break
    magnitude = float(rng.uniform(*speed))
    return sx * magnitude, sy * magnitude


def _track(
    rng: np.random.Generator,
    look: tuple[str, str],
    sizes: np.ndarray,
    steps: np.ndarray | None = None,
    visible: np.ndarray | None = None,
) -> _Track:
    """An object following `steps` from a random start chosen so it never leaves the frame."""
    if steps is None:
        steps = np.zeros((VIDEO_FRAMES - 1, 2))
    if visible is None:
        visible = np.ones(VIDEO_FRAMES, dtype=bool)
    offsets = np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)])
    half = sizes[visible].max() / 2  # centre in [half, FRAME_SIZE - half] keeps every pixel inside
    centres = []
    for axis in range(2):
        low = half - offsets[:, axis].min()
        high = FRAME_SIZE - half - offsets[:, axis].max()
        if high < low:
            raise ValueError(f"path of {look} is too long for the frame ({np.ptp(offsets[:, axis]):.1f} px)")
        centres.append(rng.uniform(low, high) + offsets[:, axis])
    return _Track(look[0], look[1], centres[0], centres[1], np.asarray(sizes, dtype=int), visible)


def _overlap(a: _Track, b: _Track, gap: float = 1.0) -> bool:
    """Whether the two objects touch (within `gap` px) in a frame where both are visible."""
    both = a.visible & b.visible
    reach = (a.size + b.size) / 2 + gap
    near = (np.abs(a.cx - b.cx) < reach) & (np.abs(a.cy - b.cy) < reach)
    return bool(np.any(both & near))


def _place_apart(makers: Sequence[Callable[[], _Track]]) -> list[_Track]:
    """One track per maker (each call draws a fresh random track) such that no two touch.

    Objects are placed one by one, redrawing only the newcomer; if one finds no room the
    whole scene starts again. If nothing works the last attempt is kept (rare, harmless).
    """
    for _ in range(_MAX_RESTARTS):
        placed: list[_Track] = []
        crowded = False
        for make in makers:
            for _ in range(_MAX_PLACEMENT_TRIES):
                candidate = make()
                if not any(_overlap(candidate, other) for other in placed):
                    break
            else:
                crowded = True
            placed.append(candidate)
        if not crowded:
            return placed
    return placed


def _random_event_track(rng: np.random.Generator, look: tuple[str, str]) -> _Track:
    """A distractor doing something random; the set of behaviours is closed under reversal."""
    size = _object_size(rng)
    behaviour = int(rng.integers(6))
    if behaviour == 0:  # static
        return _track(rng, look, _constant_sizes(size))
    if behaviour == 1:  # drifts the whole video
        velocity = _random_velocity(rng, (0.5, 1.0))
        return _track(rng, look, _constant_sizes(size), _velocities(velocity, _all_steps()))
    if behaviour in (2, 3):  # grows / shrinks
        small = int(rng.integers(4, 7))
        sizes = _ramp_sizes(small, small + 4, int(rng.integers(1, 6)), int(rng.integers(11, 16)))
        return _track(rng, look, sizes if behaviour == 2 else sizes[::-1])
    switch = int(rng.integers(5, 12))  # appears / disappears
    visible = _frames() >= switch
    return _track(rng, look, _constant_sizes(size), visible=visible if behaviour == 4 else ~visible)


# --- action_antonym ---------------------------------------------------------------------


def _action_antonym(rng: np.random.Generator, answer_index: int) -> TemporalItem:
    # Build the first event of the pair (grows / appears); its antonym is the same video
    # played backwards, so grows and shrinks videos share one distribution of frames.
    presence = bool(rng.random() < PRESENCE_SHARE)
    candidates = PRESENCE_PAIR if presence else SIZE_PAIR
    target_look, *other_looks = _pick_looks(rng, 1 + int(rng.integers(2)))

    def make_target() -> _Track:
        if presence:
            visible = _frames() >= int(rng.integers(5, 12))  # appears mid-video
            return _track(rng, target_look, _constant_sizes(_object_size(rng)), visible=visible)
        # Present in every frame, so presence says nothing. The size in an early or late
        # frame still hints at the answer (given that frame's time); middle frames overlap.
        small = int(rng.integers(4, 9))
        big = small + int(rng.integers(4, 6))
        sizes = _ramp_sizes(small, big, int(rng.integers(1, 6)), int(rng.integers(11, 16)))
        return _track(rng, target_look, sizes)

    makers = [make_target] + [functools.partial(_random_event_track, rng, look) for look in other_looks]
    tracks = _place_apart(makers)[::-1]  # target drawn last
    if answer_index == 1:
        tracks = [_reverse_track(track) for track in tracks]
    return TemporalItem(
        task="action_antonym",
        question=ANTONYM_QUESTION.format(color=target_look[0], shape=target_look[1]),
        candidates=candidates,
        answer_index=answer_index,
        frames=_render(tracks),
    )


# --- action_sequence --------------------------------------------------------------------


def _event_track(rng: np.random.Generator, look: tuple[str, str], event: str, frame: int) -> _Track:
    """An object that does `event` around `frame` and nothing else."""
    size = _object_size(rng)
    if event in ("appears", "disappears"):
        visible = _frames() >= frame
        return _track(rng, look, _constant_sizes(size), visible=visible if event == "appears" else ~visible)
    if event in ("grows", "shrinks"):
        small = int(rng.integers(4, 7))
        big = small + int(rng.integers(4, 6))
        sizes = _ramp_sizes(small, big, frame - 1, frame + 1)  # a clear 4-5 px jump over 2 frames
        return _track(rng, look, sizes if event == "grows" else _ramp_sizes(big, small, frame - 1, frame + 1))
    if event == "starts moving":
        steps = _velocities(_random_velocity(rng, _TARGET_SPEED), _steps_from(frame))
        return _track(rng, look, _constant_sizes(size), steps)
    raise ValueError(f"unknown event {event!r}")


def _sequence_text(look: tuple[str, str], event: str) -> str:
    return f"The {look[0]} {look[1]} {event}."


def _action_sequence(rng: np.random.Generator, answer_index: int) -> TemporalItem:
    looks = _pick_looks(rng, 2)
    event_ids = rng.choice(len(SEQUENCE_EVENTS), size=2, p=_SEQUENCE_EVENT_WEIGHTS)
    events = [SEQUENCE_EVENTS[int(k)] for k in event_ids]
    texts = [_sequence_text(look, event) for look, event in zip(looks, events)]
    # Object 0 acts first. Options are listed left to right by where the objects start, which says nothing
    # about timing but lets the answer letter be read off the video (no need to parse option text); the video
    # is mirrored when that puts the first actor in the wrong slot.
    frames_of = {
        0: int(rng.integers(_FIRST_EVENT_FRAMES[0], _FIRST_EVENT_FRAMES[1] + 1)),
        1: int(rng.integers(_SECOND_EVENT_FRAMES[0], _SECOND_EVENT_FRAMES[1] + 1)),
    }
    makers = [functools.partial(_event_track, rng, looks[k], events[k], frames_of[k]) for k in range(2)]
    tracks = _place_apart(makers)
    frames = _render(tracks)
    left_to_right = sorted(range(2), key=lambda k: tracks[k].cx[0])
    if left_to_right.index(0) != answer_index:
        frames = frames[:, :, ::-1].copy()
        left_to_right = left_to_right[::-1]
    return TemporalItem(
        task="action_sequence",
        question=SEQUENCE_QUESTION,
        candidates=tuple(texts[k] for k in left_to_right),
        answer_index=answer_index,
        frames=frames,
    )


# --- moving_direction -------------------------------------------------------------------


def _moving_direction(rng: np.random.Generator, answer_index: int) -> TemporalItem:
    target_look, distractor_look = _pick_looks(rng, 2)
    sign_x, sign_y = _DIRECTION_SIGNS[answer_index]

    def make_target() -> _Track:
        speed_x, speed_y = rng.uniform(*_TARGET_SPEED, size=2)
        steps = _velocities((sign_x * speed_x, sign_y * speed_y), _all_steps())
        return _track(rng, target_look, _constant_sizes(_object_size(rng)), steps)

    def make_distractor() -> _Track:
        steps = None
        if rng.random() < 0.7:  # else static
            steps = _velocities(_random_velocity(rng, (0.5, 1.5)), _all_steps())
        return _track(rng, distractor_look, _constant_sizes(_object_size(rng)), steps)

    tracks = _place_apart([make_target, make_distractor])[::-1]  # target drawn last
    return TemporalItem(
        task="moving_direction",
        question=DIRECTION_QUESTION.format(color=target_look[0], shape=target_look[1]),
        candidates=DIRECTION_CANDIDATES,
        answer_index=answer_index,
        frames=_render(tracks),
    )


# --- object_count -----------------------------------------------------------------------


def _object_count(rng: np.random.Generator, answer_index: int) -> TemporalItem:
    early = np.zeros(COUNT_OBJECTS, dtype=bool)
    early[rng.choice(COUNT_OBJECTS, size=answer_index, replace=False)] = True
    if rng.random() < _COUNT_COMPLEMENT_SHARE:
        late = ~early
    else:
        late = np.zeros(COUNT_OBJECTS, dtype=bool)
        late[rng.choice(COUNT_OBJECTS, size=int(rng.integers(COUNT_OBJECTS + 1)), replace=False)] = True
    switch = int(rng.integers(_COUNT_SWITCH_FRAMES[0], _COUNT_SWITCH_FRAMES[1] + 1))
    looks = _pick_looks(rng, COUNT_OBJECTS)

    def make_object(look: tuple[str, str], moves_early: bool, moves_late: bool) -> _Track:
        moving_steps = (_steps_until(switch) & moves_early) | (_steps_from(switch) & moves_late)
        steps = None
        if moving_steps.any():
            steps = _velocities(_random_velocity(rng, _TARGET_SPEED), moving_steps)
        return _track(rng, look, _constant_sizes(_object_size(rng)), steps)

    # The longest paths (moving in both halves) are the hardest to fit, so they go first.
    plans = sorted(zip(looks, early.tolist(), late.tolist()), key=lambda plan: -(plan[1] + plan[2]))
    makers = [functools.partial(make_object, *plan) for plan in plans]
    return TemporalItem(
        task="object_count",
        question=COUNT_QUESTION,
        candidates=COUNT_CANDIDATES,
        answer_index=answer_index,
        frames=_render(_place_apart(makers)),
    )


# --- scene_transition -------------------------------------------------------------------


@functools.cache
def scene_image(scene: str) -> np.ndarray:
    """One still of `scene` (read-only): a distinct dark colour with a simple static pattern."""
    size = FRAME_SIZE
    frame = np.empty((size, size, 3), dtype=np.uint8)
    ys, xs = np.mgrid[0:size, 0:size]
    if scene == "beach":
        frame[:] = (105, 90, 50)  # sand
        frame[: size // 3] = (25, 50, 110)  # sea along the top
    elif scene == "city":
        frame[:] = (50, 50, 70)
        frame[size // 3 :, (xs[0] % 8) < 5] = (28, 28, 36)  # buildings
        frame[(ys > size // 3) & (ys % 4 == 1) & (xs % 8 == 2)] = (200, 180, 70)  # windows
    elif scene == "desert":
        frame[:] = (120, 70, 25)
        frame[((xs + 2 * ys) % 12) < 3] = (85, 45, 15)  # dune ridges
    elif scene == "forest":
        frame[:] = (25, 70, 30)
        frame[:, (xs[0] % 8) < 2] = (65, 40, 20)  # tree trunks
    elif scene == "night":
        frame[:] = (12, 12, 40)
        frame[((xs * 7 + ys * 13) % 29 == 0)] = (210, 210, 150)  # stars
    elif scene == "snow":
        frame[:] = (120, 130, 150)
        frame[(ys % 6 < 2) & ((xs + 3 * (ys // 6)) % 6 < 2)] = (225, 230, 240)  # flakes
    else:
        raise ValueError(f"unknown scene {scene!r}; choose one of {SCENE_NAMES}")
    frame.flags.writeable = False
    return frame


def scene_transition_candidates(first: str, second: str) -> tuple[str, str]:
    """The two options in alphabetical scene order, so their order does not leak the answer."""
    a, b = sorted((first, second))
    return (f"From the {a} to the {b}.", f"From the {b} to the {a}.")


def _scene_transition(rng: np.random.Generator, answer_index: int) -> TemporalItem:
    a, b = sorted(SCENE_NAMES[int(k)] for k in rng.choice(len(SCENE_NAMES), size=2, replace=False))
    first, second = (a, b) if answer_index == 0 else (b, a)
    switch = int(rng.integers(_SCENE_SWITCH_FRAMES[0], _SCENE_SWITCH_FRAMES[1] + 1))
    base = np.empty((VIDEO_FRAMES, FRAME_SIZE, FRAME_SIZE, 3), dtype=np.uint8)
    base[:switch] = scene_image(first)
    base[switch:] = scene_image(second)
    clutter = [_random_event_track(rng, look) for look in _pick_looks(rng, int(rng.integers(2)))]
    return TemporalItem(
        task="scene_transition",
        question=SCENE_QUESTION,
        candidates=scene_transition_candidates(a, b),
        answer_index=answer_index,
        frames=_render(clutter, base),
    )


_BUILDERS: dict[str, Callable[[np.random.Generator, int], TemporalItem]] = {
    "action_antonym": _action_antonym,
    "action_sequence": _action_sequence,
    "moving_direction": _moving_direction,
    "object_count": _object_count,
    "scene_transition": _scene_transition,
}

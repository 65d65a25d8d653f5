"""Named spans of positions in a model's input sequence.

Spans are recorded while the prompt is tokenized (from the tokenizer's character offsets of named prompt segments),
never by searching decoded text, so repeated words, multi-byte characters and space-keeping tokenizers cannot move them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import LayoutError


@dataclass(frozen=True)
class Span:
    """A set of input positions, stored as sorted, disjoint half-open ranges ``[start, stop)``."""

    name: str
    ranges: tuple[tuple[int, int], ...]

    @classmethod
    def from_positions(cls, name: str, positions) -> Span:
        positions = sorted(set(int(p) for p in positions))
        ranges: list[tuple[int, int]] = []
        for p in positions:
            if ranges and ranges[-1][1] == p:
                ranges[-1] = (ranges[-1][0], p + 1)
            else:
                ranges.append((p, p + 1))
        return cls(name, tuple(ranges))

    @classmethod
    def union(cls, name: str, spans) -> Span:
        return cls.from_positions(name, [p for s in spans for p in s.positions()])

    def positions(self) -> np.ndarray:
        if not self.ranges:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in self.ranges])

    def __len__(self) -> int:
        return sum(b - a for a, b in self.ranges)

    @property
    def start(self) -> int:
        return self.ranges[0][0]

    @property
    def stop(self) -> int:
        return self.ranges[-1][1]


@dataclass(frozen=True)
class TokenLayout:
    """Where everything sits in one input sequence.

    ``spans`` holds every named span: ``video``, ``frame_0`` … ``frame_{T-1}``, ``question`` (question block with its
    options), ``non_option_question``, ``option_A`` …, ``true_option``, ``false_options``, ``last`` and the template's
    own segments (``system``, ``post_prompt``, ``answer_prompt`` …). ``video`` holds only the frames' feature tokens;
    ``video_markup`` the text the processor wrote between them (frame labels, timestamps, wrappers; may be empty) and
    ``video_block`` both. Frames are the family's frame unit (a frame, or a temporal group of frames).
    ``video_grid`` is the (t, h, w) shape of the video tokens when every frame unit has the same raster grid: frame
    t's token (h, w) sits at ``frames[t].start + h * w_size + w``; None when the units differ in size.
    ``frame_runs``: what ``cross_frame`` treats as each frame, when that is more than its feature tokens: VideoLLaMA3's
    run is the frame's ``Time t s:`` label, its tokens and the separator before it, as the paper's code splits the
    video block. Empty: the runs are the ``frames``. Runs partition ``video_block``.
    """

    seq_len: int
    spans: dict[str, Span]
    frames: tuple[Span, ...]
    video_grid: tuple[int, int, int] | None
    option_letters: tuple[str, ...] = ()
    true_letter: str | None = None
    segment_text: dict[str, str] = field(default_factory=dict)
    frame_runs: tuple[Span, ...] = ()

    @property
    def runs(self) -> tuple[Span, ...]:
        """Each frame's run for ``cross_frame``: ``frame_runs`` when set, else the frames' feature tokens."""
        return self.frame_runs or self.frames

    def __getitem__(self, name: str) -> Span:
        try:
            return self.spans[name]
        except KeyError:
            raise LayoutError(f"no span named '{name}' in this input; known spans: {', '.join(self.spans)}") from None

    def positions(self, name: str) -> np.ndarray:
        return self[name].positions()

    @property
    def last(self) -> int:
        return self.seq_len - 1

    def with_spans(self, seq_len: int | None = None, **positions) -> TokenLayout:
        """A copy grown to ``seq_len`` (``last`` moves to the new end) with extra spans given as positions.

        Used for inputs extended past the prompt (generated text) and for per-sample spans such as the predicted
        option."""
        from dataclasses import replace

        seq_len = self.seq_len if seq_len is None else seq_len
        spans = dict(self.spans)
        spans.update({name: Span.from_positions(name, pos) for name, pos in positions.items()})
        spans["last"] = Span("last", ((seq_len - 1, seq_len),))
        layout = replace(self, seq_len=seq_len, spans=spans)
        layout.validate()
        return layout

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.spans)

    def validate(self) -> None:
        """Check invariants every analysis relies on; raise LayoutError otherwise."""
        video = self.spans.get("video")
        if video is None or len(video) == 0:
            raise LayoutError("the model input has no video tokens; put the video placeholder in the prompt")
        frame_positions = np.concatenate([f.positions() for f in self.frames]) if self.frames else np.zeros(0)
        if not np.array_equal(frame_positions, video.positions()):
            raise LayoutError("frame spans do not partition the video span exactly")
        if self.video_grid is not None and (
            self.video_grid[0] != len(self.frames)
            or any(len(f) != self.video_grid[1] * self.video_grid[2] for f in self.frames)
        ):
            raise LayoutError(
                f"video grid {self.video_grid} disagrees with the frame spans {[len(f) for f in self.frames]}"
            )
        if self.frame_runs:
            run_positions = np.concatenate([r.positions() for r in self.frame_runs])
            if len(self.frame_runs) != len(self.frames) or not np.array_equal(
                run_positions, self.spans["video_block"].positions()
            ):
                raise LayoutError("frame runs do not partition the video block, one run per frame")
        for span in self.spans.values():
            if span.ranges and (span.start < 0 or span.stop > self.seq_len):
                raise LayoutError(f"span '{span.name}' {span.ranges} lies outside the sequence of {self.seq_len}")

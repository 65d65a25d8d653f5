"""Edge sets (which attention edges to cut) and layer windows (in which layers to cut them).

A flow is a declarative list of blocks ``source -> target`` over named spans of a `TokenLayout`: the target's query
rows may no longer read the source's keys. ``cross_frame`` is the one block that is not a plain cross product: each
frame's queries lose every earlier frame's keys, and within-frame attention stays. A frame is its run
(`TokenLayout.runs`: on VideoLLaMA3 the ``Time t s:`` label, the tokens and the separator, as the paper's code);
``cross_frame_tokens`` cuts between the feature tokens only. Finer cuts follow the same rule: ``frame_run_i`` names
frame i's run (``frame_run_0->frame_run_2``: one pair of runs), ``frame_i`` its feature tokens only;
``frame_distance:d`` cuts every run from the run d before it, ``frame_distance_tokens:d`` the feature tokens only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ..errors import KnockoutConfigError
from ..inputs.layout import TokenLayout

CROSS_FRAME = "cross_frame"
# cross_frame over the frames' feature tokens only, even where a frame's run also holds its label and separator
CROSS_FRAME_TOKENS = "cross_frame_tokens"
CROSS_FRAME_KINDS = (CROSS_FRAME, CROSS_FRAME_TOKENS)
FRAME_DISTANCE = "frame_distance"  # "frame_distance:d": every frame's run loses the keys of the run d before it
FRAME_DISTANCE_TOKENS = "frame_distance_tokens"  # the same between the frames' feature tokens only
FRAME_DISTANCE_KINDS = (FRAME_DISTANCE, FRAME_DISTANCE_TOKENS)
_FRAME_SPAN = re.compile(r"frame_(\d+)$")
_FRAME_RUN = re.compile(r"frame_run_(\d+)$")  # frame i's run (`TokenLayout.runs`), not a span of the layout


@dataclass(frozen=True)
class Block:
    source: str
    target: str

    @property
    def label(self) -> str:
        if self.source in CROSS_FRAME_KINDS:
            return self.source
        if self.source in FRAME_DISTANCE_KINDS:
            return f"{self.source}:{self.target}"
        return f"{self.source}->{self.target}"


@dataclass(frozen=True)
class Flow:
    """A named set of blocked edges. Its label reads ``source->target`` (several blocks joined by ``+``)."""

    blocks: tuple[Block, ...]

    @property
    def label(self) -> str:
        return "+".join(b.label for b in self.blocks)

    @classmethod
    def parse(cls, text: str) -> Flow:
        """``"video->question"``, ``"cross_frame"`` or several joined by ``+``."""
        blocks = []
        for part in text.split("+"):
            part = part.strip()
            if part in CROSS_FRAME_KINDS:
                blocks.append(Block(part, part))
                continue
            kind, colon, distance = part.partition(":")
            if colon and kind.strip() in FRAME_DISTANCE_KINDS:
                distance = distance.strip()
                if not distance.isdigit() or int(distance) < 1:
                    raise KnockoutConfigError(f"cannot read flow '{part}': write '{kind.strip()}:d' with d >= 1")
                blocks.append(Block(kind.strip(), str(int(distance))))
                continue
            source, sep, target = part.partition("->")
            if not sep or not source.strip() or not target.strip():
                raise KnockoutConfigError(f"cannot read flow '{part}': write 'source->target' or '{CROSS_FRAME}'")
            blocks.append(Block(source.strip(), target.strip()))
        return cls(tuple(blocks))

    def block_matrix(self, layout: TokenLayout) -> np.ndarray:
        """Boolean (L, L) matrix, True where query row t may not read key column s."""
        blocked = np.zeros((layout.seq_len, layout.seq_len), dtype=bool)
        for block in self.blocks:
            if block.source in CROSS_FRAME_KINDS:
                runs = layout.runs if block.source == CROSS_FRAME else layout.frames
                for i, frame in enumerate(runs[1:], start=1):
                    earlier = np.concatenate([f.positions() for f in runs[:i]])
                    blocked[np.ix_(frame.positions(), earlier)] = True
            elif block.source in FRAME_DISTANCE_KINDS:
                distance = int(block.target)
                if not 1 <= distance < len(layout.frames):
                    raise KnockoutConfigError(
                        f"flow '{block.label}': frame distance {distance} is out of range; this input has "
                        f"{len(layout.frames)} frame(s), so distances 1..{len(layout.frames) - 1}"
                    )
                runs = layout.runs if block.source == FRAME_DISTANCE else layout.frames
                for i in range(distance, len(runs)):
                    blocked[np.ix_(runs[i].positions(), runs[i - distance].positions())] = True
            else:
                blocked[np.ix_(span_positions(block.target, layout), span_positions(block.source, layout))] = True
        check_every_row_keeps_a_key(blocked, self.label)
        return blocked


def check_frame_span(name: str, layout: TokenLayout) -> None:
    """A ``frame_i`` or ``frame_run_i`` beyond the input's frames: an error naming the valid range."""
    match = _FRAME_SPAN.match(name) or _FRAME_RUN.match(name)
    if match and int(match.group(1)) >= len(layout.frames):
        raise KnockoutConfigError(
            f"frame {match.group(1)} in '{name}' is out of range; this input has frames 0..{len(layout.frames) - 1}"
        )


def span_positions(name: str, layout: TokenLayout) -> np.ndarray:
    """Positions of a named span, or of frame i's run for ``frame_run_i``."""
    check_frame_span(name, layout)
    run = _FRAME_RUN.match(name)
    return layout.runs[int(run.group(1))].positions() if run else layout.positions(name)


def check_every_row_keeps_a_key(blocked: np.ndarray, label: str) -> None:
    """Refuse a mask that leaves some query with nothing to attend to.

    eager attention would then attend uniformly to all keys, future ones included, and sdpa would output zeros: the
    two silently disagree, so no such configuration is run.
    """
    seq_len = blocked.shape[-1]
    causal = np.tril(np.ones((seq_len, seq_len), dtype=bool))
    empty_rows = np.flatnonzero(~(causal & ~blocked).any(-1))
    if empty_rows.size:
        raise KnockoutConfigError(
            f"flow '{label}' leaves query position(s) {empty_rows[:10].tolist()} with no key to attend to; "
            "keep at least one allowed key per row (for example do not block a token's only key)"
        )


# Paper flows (spec §2 A1), by the figure they draw.
PAPER_FLOWS = {
    "cross_frame": ["cross_frame"],
    "information_flow": ["video->question", "video->last", "question->last", "last->last"],
    "question_options_to_last": ["non_option_question->last", "true_option->last", "false_options->last"],
    "into_true_option": ["video->non_option_question", "non_option_question->true_option", "video->true_option"],
}


# ---------------------------------------------------------------------------------------------------------------
# Layer windows


@dataclass(frozen=True)
class Window:
    """Which layers are knocked out when the sweep stands at layer ``l``.

    style: ``center`` (k layers around l, clipped at both ends, never shifted), ``inverse`` (all but the centred
    window), ``bottom_up`` (layers 0..l), ``top_down`` (layers l..L-1), or ``ranges`` (fixed explicit layer ranges,
    the same at every sweep point: use ``sweep=[0]``).
    """

    style: str = "center"
    size: int = 9
    ranges: tuple[tuple[int, int], ...] = ()

    STYLES = ("center", "inverse", "bottom_up", "top_down", "ranges")

    def __post_init__(self):
        if self.style not in self.STYLES:
            raise KnockoutConfigError(f"unknown window style '{self.style}'; choose one of {', '.join(self.STYLES)}")
        if self.style in ("center", "inverse") and self.size < 1:
            raise KnockoutConfigError(f"window size must be >= 1, got {self.size}")

    def layers(self, layer: int, num_layers: int) -> tuple[int, ...]:
        if not 0 <= layer < num_layers:
            raise KnockoutConfigError(f"layer {layer} is outside 0..{num_layers - 1}")
        if self.style == "ranges":
            chosen = sorted({i for a, b in self.ranges for i in range(a, b)})
            if any(not 0 <= i < num_layers for i in chosen):
                raise KnockoutConfigError(f"layer ranges {self.ranges} reach outside 0..{num_layers - 1}")
            return tuple(chosen)
        if self.style == "bottom_up":
            return tuple(range(0, layer + 1))
        if self.style == "top_down":
            return tuple(range(layer, num_layers))
        centred = range(max(0, layer - self.size // 2), min(num_layers, layer + math.ceil(self.size / 2)))
        if self.style == "center":
            return tuple(centred)
        return tuple(i for i in range(num_layers) if i not in centred)

    @property
    def label(self) -> str:
        if self.style == "ranges":
            return "ranges:" + ",".join(f"{a}-{b}" for a, b in self.ranges)
        return f"{self.style}:{self.size}" if self.style in ("center", "inverse") else self.style

    @classmethod
    def parse_ranges(cls, text: str) -> Window:
        """``"0-16,20-24"`` (half-open, 0-based) as an explicit-ranges window."""
        ranges = []
        for part in text.split(","):
            a, sep, b = part.partition("-")
            try:
                ranges.append((int(a), int(b)) if sep else (int(a), int(a) + 1))
            except ValueError:
                raise KnockoutConfigError(f"cannot read layer range '{part}': write 'start-stop'") from None
        return cls(style="ranges", ranges=tuple(ranges))

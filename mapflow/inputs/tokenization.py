"""Turn named prompt segments plus the tokenizer's character offsets into a `TokenLayout`.

The segments given here are the *expanded* ones: their texts concatenate to exactly the text the tokenizer saw, with
the ``video`` segment holding what the processor wrote for the video (the repeated video token, and for some families
frame labels, timestamps or wrappers between the runs). Inside that segment, positions holding the video token id are
the ``video`` span (the frames' features); the processor's other text there is ``video_markup``.
"""

from __future__ import annotations

import numpy as np

from ..errors import LayoutError
from .layout import Span, TokenLayout
from .prompts import VIDEO, PromptSegment

VIDEO_MARKUP = "video_markup"  # text the processor wrote between the video runs: frame labels, timestamps, wrappers
VIDEO_BLOCK = "video_block"  # the whole expanded video segment (features and markup), as VideoLLaMA3's paper code


def _segment_char_starts(segments: list[PromptSegment]) -> tuple[np.ndarray, list[str]]:
    starts, names, cursor = [], [], 0
    for seg in segments:
        starts.append(cursor)
        names.append(seg.name)
        cursor += len(seg.text)
    starts.append(cursor)
    return np.asarray(starts), names


def segment_positions(segments: list[PromptSegment], text: str, offsets) -> dict[str, list[int]]:
    """Map every token position to the prompt segment its non-space characters come from.

    A token whose visible characters come from two segments cannot be attributed honestly, so it is an error (build
    the prompt so segment borders fall on token borders). Whitespace-only tokens go to the segment they start in;
    tokens with empty offsets (a BOS the tokenizer adds) belong to no segment.
    """
    starts, names = _segment_char_starts(segments)
    if starts[-1] != len(text):
        raise LayoutError(f"segments cover {starts[-1]} characters but the tokenized text has {len(text)}")
    positions: dict[str, list[int]] = {name: [] for name in names}
    for pos, (a, b) in enumerate(np.asarray(offsets).tolist()):
        if a == b:
            continue
        visible = [i for i in range(a, b) if not text[i].isspace()] or [a]
        owners = {names[int(np.searchsorted(starts, i, side="right")) - 1] for i in visible}
        if len(owners) != 1:
            raise LayoutError(
                f"token at position {pos} ({text[a:b]!r}) spans segments {sorted(owners)}; "
                "segment borders must fall on token borders"
            )
        positions[owners.pop()].append(pos)
    return positions


def _runs(positions: np.ndarray) -> list[tuple[int, int]]:
    """Maximal contiguous runs ``[start, stop)`` of sorted positions."""
    if positions.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    return [(int(run[0]), int(run[-1]) + 1) for run in np.split(positions, breaks)]


def frame_spans(features: np.ndarray, frame_sizes: list[int]) -> tuple[Span, ...]:
    """Split the video feature positions into consecutive frame units of the given sizes.

    Each unit must be one contiguous run, and a gap between runs (timestamp text, a frame label) may only fall on a
    unit border: otherwise the sizes do not describe this input and the split would be silently wrong.
    """
    if sum(frame_sizes) != features.size or any(size <= 0 for size in frame_sizes):
        raise LayoutError(
            f"the input holds {features.size} video feature tokens but the frame units need "
            f"{frame_sizes} (sum {sum(frame_sizes)})"
        )
    borders = np.cumsum([0, *frame_sizes])
    frames = []
    for i, (a, b) in enumerate(zip(borders[:-1], borders[1:])):
        part = features[a:b]
        if part[-1] - part[0] + 1 != part.size:
            raise LayoutError(
                f"frame unit {i} ({part.size} tokens from position {int(part[0])}) is not one "
                "contiguous run of video tokens; the frame sizes do not match the processor's layout"
            )
        frames.append(Span(f"frame_{i}", ((int(part[0]), int(part[-1]) + 1),)))
    run_starts = {a for a, _ in _runs(features)}
    unit_starts = {f.start for f in frames}
    if not run_starts <= unit_starts:
        raise LayoutError(
            f"a run of video tokens starts inside a frame unit (runs start at {sorted(run_starts)}, "
            f"units at {sorted(unit_starts)})"
        )
    return tuple(frames)


def build_layout(
    segments: list[PromptSegment],
    text: str,
    input_ids,
    offsets,
    *,
    video_token_id: int,
    frame_sizes: list[int],
    video_grid: tuple[int, int, int] | None = None,
    trailing_video_tokens: int = 0,
    option_letters=(),
    true_letter=None,
    non_option_includes_prefix: bool = True,
    frame_runs_with_markup: bool = False,
) -> TokenLayout:
    """The full `TokenLayout` of one input, with derived spans (question block, true/false options, frames, last).

    ``frame_sizes``: feature tokens per frame unit, in order (the family's own unit: a frame, or Qwen's temporal
    group of two frames). ``trailing_video_tokens``: video-id tokens after the last unit that belong to no frame
    (LLaVA-OneVision's learned newline); they go to ``video_markup``. ``frame_runs_with_markup``: each frame's run
    (what ``cross_frame`` cuts between) also holds the markup before its tokens (VideoLLaMA3's separator and
    ``Time t s:`` label); markup after the last frame joins the last run.
    """
    input_ids = np.asarray(input_ids)
    seq_len = len(input_ids)
    if not any(s.name == VIDEO for s in segments) or not (input_ids == video_token_id).any():
        raise LayoutError(
            f"the model input has no video tokens (id {video_token_id}); did the prompt lose its video placeholder?"
        )
    by_segment = segment_positions(segments, text, offsets)
    in_video_segment = np.asarray(by_segment.pop(VIDEO), dtype=np.int64)
    is_feature = input_ids[in_video_segment] == video_token_id
    features = in_video_segment[is_feature]
    stray = np.setdiff1d(np.flatnonzero(input_ids == video_token_id), features)
    if stray.size:
        raise LayoutError(
            f"video token id {video_token_id} also occurs outside the video segment, at positions {stray[:10].tolist()}"
        )
    if trailing_video_tokens:
        features, tail = features[:-trailing_video_tokens], features[-trailing_video_tokens:]
    else:
        tail = np.zeros(0, dtype=np.int64)
    markup = np.union1d(in_video_segment[~is_feature], tail)
    frames = frame_spans(features, frame_sizes)

    spans = {name: Span.from_positions(name, pos) for name, pos in by_segment.items()}
    spans[VIDEO] = Span.from_positions(VIDEO, features)
    spans[VIDEO_MARKUP] = Span.from_positions(VIDEO_MARKUP, markup)
    spans[VIDEO_BLOCK] = Span.from_positions(VIDEO_BLOCK, in_video_segment)
    spans.update({f.name: f for f in frames})

    option_names = [f"option_{letter}" for letter in option_letters]
    if "question_text" in spans:
        question_parts = [
            n
            for n in spans
            if n in ("question_prefix", "question_text", "options_header")
            or n in option_names
            or n.startswith("option_separator_")
        ]
        spans["question"] = Span.union("question", [spans[n] for n in question_parts])
        non_option_parts = [
            n
            for n in ("question_prefix", "question_text")
            if n in spans and (non_option_includes_prefix or n == "question_text")
        ]
        spans["non_option_question"] = Span.union("non_option_question", [spans[n] for n in non_option_parts])
        if option_names and true_letter is not None:
            spans["true_option"] = Span("true_option", spans[f"option_{true_letter}"].ranges)
            spans["false_options"] = Span.union(
                "false_options", [spans[n] for n in option_names if n != f"option_{true_letter}"]
            )
    spans["last"] = Span("last", ((seq_len - 1, seq_len),))

    runs = frame_runs(in_video_segment, frames) if frame_runs_with_markup else ()
    layout = TokenLayout(
        seq_len=seq_len,
        spans=spans,
        frames=frames,
        video_grid=video_grid,
        option_letters=tuple(option_letters),
        true_letter=true_letter,
        segment_text={s.name: s.text for s in segments},
        frame_runs=runs,
    )
    layout.validate()
    return layout


def frame_runs(block_positions: np.ndarray, frames) -> tuple[Span, ...]:
    """The video block cut after each frame's last token: run i is everything after frame i-1 up to frame i's end
    (the separator and label before frame i, then its tokens); what follows the last frame joins the last run."""
    block_positions = np.asarray(block_positions, dtype=np.int64)
    ends = [f.stop for f in frames[:-1]] + [int(block_positions.max()) + 1]
    starts = [int(block_positions.min())] + ends[:-1]
    return tuple(
        Span.from_positions(f"frame_run_{i}", block_positions[(block_positions >= a) & (block_positions < b)])
        for i, (a, b) in enumerate(zip(starts, ends))
    )

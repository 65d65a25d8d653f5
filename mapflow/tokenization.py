"""Turn named prompt segments plus the tokenizer's character offsets into a `TokenLayout`."""

from __future__ import annotations

import numpy as np

from .errors import LayoutError
from .layout import Span, TokenLayout
from .prompts import VIDEO, PromptSegment


def _segment_char_bounds(segments: list[PromptSegment], video_text_length: int) -> tuple[np.ndarray, list[str]]:
    """Start offset of each segment in the text the tokenizer saw (video placeholder already expanded)."""
    starts, names, cursor = [], [], 0
    for seg in segments:
        starts.append(cursor)
        names.append(seg.name)
        cursor += video_text_length if seg.name == VIDEO else len(seg.text)
    starts.append(cursor)
    return np.asarray(starts), names


def _video_run(input_ids: np.ndarray, video_token_id: int) -> tuple[int, int]:
    where = np.flatnonzero(input_ids == video_token_id)
    if where.size == 0:
        raise LayoutError(f"the model input has no video tokens (id {video_token_id}); "
                          "did the prompt lose its video placeholder?")
    if where[-1] - where[0] + 1 != where.size:
        raise LayoutError("video tokens are not one contiguous run; this adapter expects a single video block")
    return int(where[0]), int(where[-1]) + 1


def segment_positions(segments: list[PromptSegment], text: str, input_ids, offsets, video_token_id: int,
                      video_placeholder: str) -> dict[str, list[int]]:
    """Map every token position to the prompt segment its non-space characters come from.

    A token whose visible characters come from two segments cannot be attributed honestly, so it is an error (build
    the prompt so segment borders fall on token borders). Whitespace-only tokens go to the segment they start in.
    """
    input_ids = np.asarray(input_ids)
    video_start, video_stop = _video_run(input_ids, video_token_id)
    n_video = video_stop - video_start
    starts, names = _segment_char_bounds(segments, n_video * len(video_placeholder))
    if starts[-1] != len(text):
        raise LayoutError(f"segments cover {starts[-1]} characters but the tokenized text has {len(text)}")
    positions: dict[str, list[int]] = {name: [] for name in names}
    positions[VIDEO] = list(range(video_start, video_stop))
    for pos, (a, b) in enumerate(np.asarray(offsets).tolist()):
        if video_start <= pos < video_stop or a == b:
            continue  # video tokens are placed by id; special tokens (BOS) have empty offsets
        visible = [i for i in range(a, b) if not text[i].isspace()] or [a]
        owners = {names[int(np.searchsorted(starts, i, side="right")) - 1] for i in visible}
        if len(owners) != 1:
            raise LayoutError(f"token at position {pos} ({text[a:b]!r}) spans segments {sorted(owners)}; "
                              "segment borders must fall on token borders")
        positions[owners.pop()].append(pos)
    return positions


def build_layout(segments: list[PromptSegment], text: str, input_ids, offsets, *, video_token_id: int,
                 video_placeholder: str, video_grid: tuple[int, int, int], option_letters=(), true_letter=None,
                 non_option_includes_prefix: bool = True) -> TokenLayout:
    """The full `TokenLayout` of one input, with derived spans (question block, true/false options, frames, last)."""
    seq_len = len(input_ids)
    by_segment = segment_positions(segments, text, input_ids, offsets, video_token_id, video_placeholder)
    spans = {name: Span.from_positions(name, pos) for name, pos in by_segment.items()}

    t, h, w = video_grid
    video = spans[VIDEO]
    if len(video) != t * h * w:
        raise LayoutError(f"found {len(video)} video tokens but the video grid {video_grid} needs {t * h * w}")
    per_frame = h * w
    frames = tuple(Span(f"frame_{i}", ((video.start + i * per_frame, video.start + (i + 1) * per_frame),))
                   for i in range(t))
    spans.update({f.name: f for f in frames})

    option_names = [f"option_{letter}" for letter in option_letters]
    if "question_text" in spans:
        question_parts = [n for n in spans if n in ("question_prefix", "question_text", "options_header")
                          or n in option_names or n.startswith("option_separator_")]
        spans["question"] = Span.union("question", [spans[n] for n in question_parts])
        non_option_parts = [n for n in ("question_prefix", "question_text") if n in spans
                            and (non_option_includes_prefix or n == "question_text")]
        spans["non_option_question"] = Span.union("non_option_question", [spans[n] for n in non_option_parts])
        if option_names and true_letter is not None:
            spans["true_option"] = Span("true_option", spans[f"option_{true_letter}"].ranges)
            spans["false_options"] = Span.union(
                "false_options", [spans[n] for n in option_names if n != f"option_{true_letter}"])
    spans["last"] = Span("last", ((seq_len - 1, seq_len),))

    layout = TokenLayout(
        seq_len=seq_len, spans=spans, frames=frames, video_grid=video_grid, option_letters=tuple(option_letters),
        true_letter=true_letter, segment_text={s.name: s.text for s in segments},
    )
    layout.validate()
    return layout

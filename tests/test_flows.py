import numpy as np
import pytest

from mapflow.errors import KnockoutConfigError
from mapflow.knockout.flows import Flow, Window, check_every_row_keeps_a_key


@pytest.mark.parametrize(
    "layer,expected",
    [
        (0, range(0, 5)),
        (1, range(0, 6)),
        (4, range(0, 9)),
        (10, range(6, 15)),
        (31, range(27, 32)),
        (29, range(25, 32)),
    ],
)
def test_centred_window_is_clipped_not_shifted(layer, expected):
    assert Window("center", 9).layers(layer, 32) == tuple(expected)


def test_even_window_is_asymmetric_like_the_paper_code():
    assert Window("center", 4).layers(10, 32) == (8, 9, 10, 11)
    assert Window("center", 1).layers(7, 32) == (7,)


def test_other_window_styles():
    assert Window("inverse", 3).layers(1, 6) == (3, 4, 5)
    assert Window("bottom_up").layers(2, 6) == (0, 1, 2)
    assert Window("top_down").layers(4, 6) == (4, 5)
    assert Window.parse_ranges("0-2,4-5").layers(0, 6) == (0, 1, 4)
    with pytest.raises(KnockoutConfigError):
        Window.parse_ranges("0-9").layers(0, 6)
    with pytest.raises(KnockoutConfigError):
        Window("sideways")


def test_flow_labels_and_parsing():
    assert Flow.parse("video->question").label == "video->question"
    assert Flow.parse("cross_frame").label == "cross_frame"
    assert Flow.parse("video->last + question->last").label == "video->last+question->last"
    with pytest.raises(KnockoutConfigError):
        Flow.parse("video to last")


def test_cross_frame_blocks_exactly_earlier_frames(prepared):
    layout = prepared.layout
    blocked = Flow.parse("cross_frame").block_matrix(layout)
    frame_of = {int(p): i for i, f in enumerate(layout.frames) for p in f.positions()}
    rows, cols = np.nonzero(blocked)
    assert len(rows) > 0
    assert all(frame_of[c] < frame_of[r] for r, c in zip(rows, cols))
    per_frame = len(layout.frames[0])
    expected = sum(i * per_frame * per_frame for i in range(len(layout.frames)))
    assert blocked.sum() == expected


def test_span_blocks_are_cross_products(prepared):
    layout = prepared.layout
    blocked = Flow.parse("video->question").block_matrix(layout)
    q, v = layout.positions("question"), layout.positions("video")
    assert blocked.sum() == len(q) * len(v)
    assert blocked[np.ix_(q, v)].all()
    last = Flow.parse("last->last").block_matrix(layout)
    assert last.sum() == 1 and last[layout.last, layout.last]


def test_row_without_any_key_is_refused():
    blocked = np.zeros((4, 4), dtype=bool)
    blocked[2, :3] = True
    with pytest.raises(KnockoutConfigError, match=r"\[2\]"):
        check_every_row_keeps_a_key(blocked, "demo")
    blocked[2, 0] = False
    check_every_row_keeps_a_key(blocked, "demo")


def test_unknown_span_names_the_known_ones(prepared):
    with pytest.raises(Exception, match="known spans"):
        Flow.parse("video->answer").block_matrix(prepared.layout)

import numpy as np
import pytest

from mapflow.errors import LayoutError
from mapflow.inputs.prompts import PromptSegment, mcqa_segments


def decode(adapter, prepared, name):
    ids = prepared.inputs["input_ids"][0].numpy()
    return adapter.tokenizer.decode(ids[prepared.layout.positions(name)])


def test_each_segment_span_decodes_to_its_text(adapter, prepared):
    for segment in prepared.segments:
        if segment.name == "video" or not segment.text.strip():
            continue
        assert decode(adapter, prepared, segment.name).strip() == segment.text.strip(), segment.name


def test_derived_spans_decode_to_their_parts(adapter, prepared, sample):
    assert decode(adapter, prepared, "true_option").strip() == f"(C) {sample.candidates[2]}"
    false = decode(adapter, prepared, "false_options")
    assert "(A) Up and to the left." in false and "(B) Up and to the right." in false and "(C)" not in false
    question = decode(adapter, prepared, "question").strip()
    assert question.startswith("Question: Which direction") and question.endswith("Down and to the left.")
    assert decode(adapter, prepared, "non_option_question").strip() == f"Question: {sample.question}"
    assert prepared.layout.positions("last").tolist() == [prepared.layout.seq_len - 1]


def test_non_option_question_without_prefix_matches_released_code(adapter, sample, frames):
    prepared = adapter.prepare(
        frames,
        mcqa_segments(sample),
        option_letters=sample.option_letters,
        true_letter=sample.answer_letter,
        non_option_includes_prefix=False,
    )
    assert decode(adapter, prepared, "non_option_question").strip() == sample.question


def test_frames_partition_the_video_span_exactly(adapter, prepared, frames):
    layout = prepared.layout
    t, h, w = layout.video_grid
    assert t == len(frames) == len(layout.frames)
    joined = np.concatenate([f.positions() for f in layout.frames])
    assert np.array_equal(joined, layout.positions("video"))
    assert len(set(joined.tolist())) == len(joined) == t * h * w
    ids = prepared.inputs["input_ids"][0].numpy()
    assert (ids[layout.positions("video")] == adapter.processor.video_token_id).all()
    outside = np.setdiff1d(np.arange(layout.seq_len), layout.positions("video"))
    assert not (ids[outside] == adapter.processor.video_token_id).any()


def test_spans_never_overlap_and_cover_the_text(prepared):
    layout = prepared.layout
    owner = {}
    for segment in prepared.segments:
        for p in layout.positions(segment.name):
            assert p not in owner, (p, segment.name, owner.get(p))
            owner[p] = segment.name
    assert set(owner) == set(range(1, layout.seq_len))  # position 0 is BOS


def test_prompt_without_video_is_refused(adapter, frames):
    segments = [PromptSegment("system", "Hello "), PromptSegment("answer_prompt", "Best option:(")]
    with pytest.raises(LayoutError, match="video"):
        adapter.prepare(frames, segments)


def test_segment_border_inside_a_token_is_refused(adapter, frames):
    # "opt" + "ion" tokenize as one piece "option": no honest owner for that token
    segments = [
        PromptSegment("system", "Best opt"),
        PromptSegment("video", "<video>"),
        PromptSegment("a", "\nBest opt"),
        PromptSegment("b", "ion:("),
    ]
    with pytest.raises(LayoutError, match="spans segments"):
        adapter.prepare(frames, segments)


def test_videomme_style_prompt_spans(adapter, frames):
    from dataclasses import replace

    from mapflow.data.sample import Sample
    from mapflow.inputs.prompts import LLAVA_MCQA_VIDEOMME

    sample = Sample(
        "Counting/001-1",
        "Counting",
        "unused.mp4",
        "How many red squares are there?",
        ("one", "two", "three", "four"),
        1,
        option_format="dot",
    )
    prepared = adapter.prepare(
        frames,
        mcqa_segments(sample, LLAVA_MCQA_VIDEOMME),
        option_letters=sample.option_letters,
        true_letter=sample.answer_letter,
    )
    assert prepared.text.endswith("D. four\n \nOnly give the best option. ASSISTANT:Best option:")
    assert decode(adapter, prepared, "true_option").strip() == "B. two"
    for letter, text in zip("ACD", ("one", "three", "four")):
        assert f"{letter}. {text}" in decode(adapter, prepared, "false_options")
    assert decode(adapter, prepared, "last").strip() == ":"
    free_form = replace(sample, candidates=(), answer_index=-1, reference_answer="two")
    with pytest.raises(Exception, match="free-form|multiple"):
        mcqa_segments(free_form, LLAVA_MCQA_VIDEOMME)

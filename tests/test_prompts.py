"""Prompt templates: multiple choice, sentence completion (appendix C.1) and free-form (VCGBench)."""

from dataclasses import replace

import pytest

from mapflow.data.sample import Sample
from mapflow.inputs.prompts import (
    LLAVA_MCQA,
    LLAVA_OPEN_ENDED,
    SYSTEM_MVBENCH,
    VCGBENCH_FREE_FORM,
    build_prompt,
    prompt_text,
    resolve_template,
)


def make(task, question, candidates, answer_index, **kw):
    return Sample(f"{task}/0000", task, "v.mp4", question, tuple(candidates), answer_index, **kw)


def test_paper_mcqa_prompt_is_exact():
    sample = make(
        "action_antonym", "What is the action being performed in the video?", ["Wear jacket.", "Take off jacket."], 1
    )
    built = build_prompt(sample, LLAVA_MCQA)
    assert prompt_text(built.segments) == (
        f"{SYSTEM_MVBENCH} USER: <video>\n USER: Question: What is the action being performed in the video?\n"
        "Options:\n(A) Wear jacket.\n(B) Take off jacket. \nOnly give the best option. ASSISTANT:Best option:("
    )
    assert built.answer_text == "B" and built.true_letter == "B" and built.option_letters == ("A", "B")


@pytest.mark.parametrize(
    "task,question,candidates,answer,stem,words",
    [
        (
            "action_antonym",
            "What is the action being performed in the video?",
            ["Wear jacket.", "Take off jacket."],
            1,
            "\nThe action being performed in the video regarding the jacket is to",
            " take off jacket",
        ),
        (
            "action_antonym",
            "What is the action being performed in the video?",
            ["Sit down.", "Stand up."],
            1,
            "\nThe action being performed in the video is to",
            " stand up",
        ),
        (
            "action_sequence",
            "What did the person do first?",
            ["Took the towel.", "Put down the blanket."],
            0,
            "\nThe action the person is doing first is to",
            " took the towel",
        ),
        (
            "moving_direction",
            "Which direction does the gray cube move in the video?",
            ["Up and to the left.", "Down and to the right."],
            1,
            "\nThe gray cube moves to the",
            " right",
        ),
        (
            "object_count",
            "How many metal objects are moving when the video begins?",
            ["0", "1", "2", "3"],
            2,
            "\nThe number of moving objects is",
            " two",
        ),
        (
            "scene_transition",
            "What's the right option for how the scenes in the video change?",
            ["From the bedroom to the street.", "From the street to the bedroom."],
            0,
            "\nThe scene in the video changes from the",
            " bedroom to the street",
        ),
    ],
)
def test_open_ended_stems(task, question, candidates, answer, stem, words):
    built = build_prompt(make(task, question, candidates, answer), LLAVA_OPEN_ENDED)
    text = prompt_text(built.segments)
    assert text.endswith(" ASSISTANT:" + stem)
    assert "Options" not in text and "(A)" not in text
    assert built.answer_text == words and built.option_letters == ()
    if task == "scene_transition":
        assert "Where does the scene in the video change from one place to another place?" in text


def test_open_ended_unknown_task_is_refused():
    with pytest.raises(ValueError, match="no open-ended stem"):
        build_prompt(make("egocentric_sequence", "q?", ["a", "b"], 0), LLAVA_OPEN_ENDED)


def test_free_form_prompt_for_vcgbench():
    sample = make(
        "temporal_qa", "What happens after the man opens the door?", [], -1, reference_answer="He walks outside."
    )
    built = build_prompt(sample, VCGBENCH_FREE_FORM)
    text = prompt_text(built.segments)
    assert text.startswith("You are Video-ChatGPT") and text.endswith(
        "USER: <video>\n USER: What happens after the man opens the door? ASSISTANT:"
    )
    assert built.answer_text == " He walks outside."
    with pytest.raises(ValueError, match="reference answer"):
        build_prompt(replace(sample, reference_answer=None), VCGBENCH_FREE_FORM)


def test_template_resolution_order():
    assert resolve_template(None, None, "tvbench").name == "llava_mcqa"
    assert resolve_template(None, None, "videomme").name == "llava_mcqa_videomme"
    assert resolve_template(None, None, "vcgbench").name == "vcgbench_free_form"
    assert resolve_template(None, LLAVA_OPEN_ENDED, "videomme").name == "llava_open_ended"
    assert resolve_template("llava_mcqa", LLAVA_OPEN_ENDED, "videomme").name == "llava_mcqa"
    with pytest.raises(KeyError, match="known"):
        resolve_template("nope", None, "tvbench")

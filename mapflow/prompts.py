"""Prompts built from named segments, so every span of the token layout is known by construction.

A template is data: an ordered list of pieces, each either literal text or a named field filled from the sample.
The question block is expanded into ``question_prefix``, ``question_text``, ``options_header`` and one segment per
option, so the layout can name each of them (and derive ``non_option_question``, ``question``, ``true_option`` …).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .data.sample import Sample

VIDEO = "video"

SYSTEM_MVBENCH = (
    "Carefully watch the video and pay attention to the cause and sequence of events, the detail and movement of "
    "objects, and the action and pose of persons. Based on your observations, select the best option that accurately "
    "addresses the question.\n"
)


@dataclass(frozen=True)
class PromptSegment:
    name: str
    text: str


@dataclass(frozen=True)
class McqaTemplate:
    """The paper's multiple-choice prompt, as literal pieces around the video and the question block."""

    name: str
    before_video: str
    video_placeholder: str
    between_video_and_question: str
    question_prefix: str
    options_header: str
    option_separator: str
    post_prompt: str
    answer_prompt: str
    options_trailer: str = ""  # text after the last option (Video-MME's question block keeps its final newline)


# `{SYSTEM} USER: <video>\n USER: Question: {q}\nOptions:\n(A) …\n(B) … \nOnly give the best option. ASSISTANT:Best option:(`
LLAVA_MCQA = McqaTemplate(
    name="llava_mcqa",
    before_video=SYSTEM_MVBENCH + " USER: ",
    video_placeholder="<video>",
    between_video_and_question="\n USER: ",
    question_prefix="Question: ",
    options_header="\nOptions:\n",
    option_separator="\n",
    post_prompt=" \nOnly give the best option.",
    answer_prompt=" ASSISTANT:Best option:(",
)

# Video-MME's options are written "A. …", so the answer prompt has no "(" and the block ends with its newline.
LLAVA_MCQA_VIDEOMME = replace(LLAVA_MCQA, name="llava_mcqa_videomme", options_trailer="\n",
                              answer_prompt=" ASSISTANT:Best option:")

# The model organisms' short prompt in the same style (question, lettered options, answer letter last): the long
# system text would triple their sequence length and CPU training time without teaching them anything.
ORGANISM_MCQA = McqaTemplate(
    name="organism_mcqa",
    before_video="USER: ",
    video_placeholder="<video>",
    between_video_and_question="\n",
    question_prefix="Question: ",
    options_header="\nOptions:\n",
    option_separator="\n",
    post_prompt="",
    answer_prompt="\nASSISTANT: Best option:(",
)

TEMPLATES = {t.name: t for t in (LLAVA_MCQA, LLAVA_MCQA_VIDEOMME, ORGANISM_MCQA)}

# The paper's template per benchmark when neither the user nor the checkpoint names one.
BENCHMARK_TEMPLATES = {"videomme": LLAVA_MCQA_VIDEOMME.name}


def resolve_template(requested: str | None, checkpoint: McqaTemplate | None, benchmark: str) -> McqaTemplate:
    """The user's choice, else the checkpoint's own template, else the paper's template for the benchmark."""
    if requested is not None:
        if requested not in TEMPLATES:
            raise KeyError(f"unknown prompt template '{requested}'; known: {', '.join(TEMPLATES)}")
        return TEMPLATES[requested]
    if checkpoint is not None:
        return checkpoint
    return TEMPLATES[BENCHMARK_TEMPLATES.get(benchmark, LLAVA_MCQA.name)]


def mcqa_segments(sample: Sample, template: McqaTemplate = LLAVA_MCQA) -> list[PromptSegment]:
    """The prompt for one sample as named segments whose texts concatenate to the full prompt.

    Options are written in the sample's own style (``(A) text`` or ``A. text``), as its benchmark publishes them.
    """
    sample.require_multiple_choice()
    segments = [
        PromptSegment("system", template.before_video),
        PromptSegment(VIDEO, template.video_placeholder),
        PromptSegment("bridge", template.between_video_and_question),
        PromptSegment("question_prefix", template.question_prefix),
        PromptSegment("question_text", sample.question),
        PromptSegment("options_header", template.options_header),
    ]
    for i, (letter, text) in enumerate(zip(sample.option_letters, sample.formatted_options)):
        if i:
            segments.append(PromptSegment(f"option_separator_{i}", template.option_separator))
        segments.append(PromptSegment(f"option_{letter}", text))
    if template.options_trailer:
        segments.append(PromptSegment("options_trailer", template.options_trailer))
    if template.post_prompt:
        segments.append(PromptSegment("post_prompt", template.post_prompt))
    segments.append(PromptSegment("answer_prompt", template.answer_prompt))
    return segments


def prompt_text(segments: list[PromptSegment]) -> str:
    return "".join(s.text for s in segments)

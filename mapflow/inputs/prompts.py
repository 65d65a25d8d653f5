"""Prompts built from named segments, so every span of the token layout is known by construction.

A template is data: an ordered list of pieces, each either literal text or a named field filled from the sample.
The question block is expanded into ``question_prefix``, ``question_text``, ``options_header`` and one segment per
option, so the layout can name each of them (and derive ``non_option_question``, ``question``, ``true_option`` …).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..data.sample import Sample

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
LLAVA_MCQA_VIDEOMME = replace(
    LLAVA_MCQA, name="llava_mcqa_videomme", options_trailer="\n", answer_prompt=" ASSISTANT:Best option:"
)

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


# Chat models (Qwen-VL, InternVL, VideoLLaMA3, LLaVA-OneVision): the adapter renders these segments through the
# model's own chat template (video and question in the user turn, the answer prompt after the assistant header). The
# instruction is VideoLLaMA3's TVBench one from the paper's code; "Best option:(" as in the LLaVA/InternVL prompts.
CHAT_MCQA = McqaTemplate(
    name="chat_mcqa",
    before_video="",
    video_placeholder="<video>",  # only a marker: the chat template writes the model's own placeholder
    between_video_and_question="\n",
    question_prefix="Question: ",
    options_header="\nOptions:\n",
    option_separator="\n",
    post_prompt="\nAnswer with the option's letter from the given choices directly and only give the best option.",
    answer_prompt="Best option:(",
)


# VideoLLaMA3's released TVBench prompt: the same instruction, no "Best option:(" (the letter follows
# "<|im_start|>assistant\n") and nothing between the video's closing newline and "Question:".
VIDEOLLAMA3_MCQA = replace(CHAT_MCQA, name="videollama3_mcqa", between_video_and_question="", answer_prompt="")


# The paper's Mini-InternVL prompt (`eval_mvbench_phi3`): the LLaVA prompt with Phi-3's role tags, written as raw
# text (no chat template); the converted checkpoint expands <video> to one `<img>…</img>` run (models/internvl.py).
# `{SYSTEM} <|user|>\n<video>\n <|user|>\nQuestion: … \nOnly give the best option. <|assistant|>\nBest option:(`
INTERNVL_PHI3_MCQA = replace(
    LLAVA_MCQA,
    name="internvl_phi3_mcqa",
    before_video=SYSTEM_MVBENCH + " <|user|>\n",
    between_video_and_question="\n <|user|>\n",
    answer_prompt=" <|assistant|>\nBest option:(",
)


@dataclass(frozen=True)
class OpenEndedTemplate:
    """Sentence completion without options (paper appendix C.1): ``… Question: {q}\n ASSISTANT:{stem}``.

    ``stems`` maps a task to its sentence stem and the rule that turns the benchmark answer into the words the model
    should write next (both data; the rules are the small named functions in `ANSWER_RULES`).
    """

    name: str
    before_video: str
    video_placeholder: str
    between_video_and_question: str
    question_prefix: str
    question_suffix: str
    answer_prefix: str
    stems: dict


@dataclass(frozen=True)
class FreeFormTemplate:
    """A free-form question answered in the model's own words (VCGBench): ``… USER: {q} ASSISTANT:``."""

    name: str
    before_video: str
    video_placeholder: str
    between_video_and_question: str
    answer_prompt: str


SYSTEM_MVBENCH_OPEN_ENDED = (
    "Carefully watch the video and pay attention to the cause and sequence of events, the detail and movement of "
    "objects, and the action and pose of persons. Based on your observations, answer the question concisely.\n"
)
SYSTEM_VCGBENCH = (
    "You are Video-ChatGPT, a large vision-language assistant. You are able to understand the video content that "
    "the user provides, and assist the user with a variety of tasks using natural language.Follow the instructions "
    "carefully and explain your answers in detail based on the provided video."  # no newline, as released
)

# TVBench open-ended stems (spec §1.2): per task the stem, an optional replacement question, and the answer rule.
TVBENCH_OPEN_ENDED_STEMS = {
    "action_antonym": {
        "stem": "\nThe action being performed in the video regarding the {object} is to",
        "stem_without_object": "\nThe action being performed in the video is to",
        "answer": "verb_phrase",
    },
    "action_sequence": {"stem": "\nThe action the person is doing first is to", "answer": "verb_phrase"},
    "moving_direction": {"stem": "\n{subject} moves to the", "answer": "horizontal_direction"},
    "object_count": {"stem": "\nThe number of moving objects is", "answer": "number_word"},
    "scene_transition": {
        "stem": "\nThe scene in the video changes from the",
        "question": "Where does the scene in the video change from one place to another place?",
        "answer": "scene_after_from",
    },
    "action_localization": {"stem": "\nThe action '{action}' occurs at the", "answer": "lowercase"},
}
ANTONYM_OBJECTS = ("jacket", "shoe", "bag", "headphone", "hat/cap", "glasses")

LLAVA_OPEN_ENDED = OpenEndedTemplate(
    name="llava_open_ended",
    before_video=SYSTEM_MVBENCH_OPEN_ENDED + " USER: ",
    video_placeholder="<video>",
    between_video_and_question="\n USER: ",
    question_prefix="Question: ",
    question_suffix="\n",
    answer_prefix=" ASSISTANT:",
    stems=TVBENCH_OPEN_ENDED_STEMS,
)

VCGBENCH_FREE_FORM = FreeFormTemplate(
    name="vcgbench_free_form",
    before_video=SYSTEM_VCGBENCH + " USER: ",
    video_placeholder="<video>",
    between_video_and_question="\n USER: ",
    answer_prompt=" ASSISTANT:",
)

TEMPLATES = {
    t.name: t
    for t in (
        LLAVA_MCQA,
        LLAVA_MCQA_VIDEOMME,
        ORGANISM_MCQA,
        CHAT_MCQA,
        VIDEOLLAMA3_MCQA,
        INTERNVL_PHI3_MCQA,
        LLAVA_OPEN_ENDED,
        VCGBENCH_FREE_FORM,
    )
}

# The paper's template per benchmark when neither the user nor the checkpoint names one.
BENCHMARK_TEMPLATES = {"videomme": LLAVA_MCQA_VIDEOMME.name, "vcgbench": VCGBENCH_FREE_FORM.name}


Template = McqaTemplate | OpenEndedTemplate | FreeFormTemplate


def resolve_template(requested: str | None, checkpoint: Template | None, benchmark: str) -> Template:
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


@dataclass(frozen=True)
class BuiltPrompt:
    """A sample's prompt as named segments, and the text the model should write right after it.

    ``answer_text`` is the option letter for multiple choice, or the answer's first words (with their leading space)
    for sentence completion and free-form answers; its first token is the ground-truth token of the analyses.
    """

    segments: list[PromptSegment]
    answer_text: str
    option_letters: tuple[str, ...] = ()
    true_letter: str | None = None

    @property
    def answer_prompt(self) -> str:
        return next((s.text for s in reversed(self.segments) if s.name == "answer_prompt"), "")


def build_prompt(sample: Sample, template: Template) -> BuiltPrompt:
    if isinstance(template, McqaTemplate):
        return BuiltPrompt(
            mcqa_segments(sample, template), sample.answer_letter, sample.option_letters, sample.answer_letter
        )
    if isinstance(template, OpenEndedTemplate):
        return _open_ended_prompt(sample, template)
    if sample.reference_answer is None:
        raise ValueError(f"sample {sample.sample_id}: the free-form template needs a reference answer")
    segments = [
        PromptSegment("system", template.before_video),
        PromptSegment(VIDEO, template.video_placeholder),
        PromptSegment("bridge", template.between_video_and_question),
        PromptSegment("question_text", sample.question),
        PromptSegment("answer_prompt", template.answer_prompt),
    ]
    return BuiltPrompt(segments, " " + sample.reference_answer.strip())


def _open_ended_prompt(sample: Sample, template: OpenEndedTemplate) -> BuiltPrompt:
    rule = template.stems.get(sample.task)
    if rule is None:
        raise ValueError(
            f"sample {sample.sample_id}: no open-ended stem for task '{sample.task}'; "
            f"stems exist for {', '.join(template.stems)}"
        )
    answer = sample.answer if not sample.is_free_form else sample.reference_answer
    question = rule.get("question", sample.question)
    stem = _fill_stem(rule, sample, answer)
    words = ANSWER_RULES[rule["answer"]](answer)
    segments = [
        PromptSegment("system", template.before_video),
        PromptSegment(VIDEO, template.video_placeholder),
        PromptSegment("bridge", template.between_video_and_question),
        PromptSegment("question_prefix", template.question_prefix),
        PromptSegment("question_text", question),
        PromptSegment("question_suffix", template.question_suffix),
        PromptSegment("answer_prompt", template.answer_prefix + stem),
    ]
    return BuiltPrompt(segments, " " + words)


def _fill_stem(rule: dict, sample: Sample, answer: str) -> str:
    stem = rule["stem"]
    if "{object}" in stem:
        found = next((o for o in ANTONYM_OBJECTS if any(part in answer.lower() for part in o.split("/"))), None)
        return stem.format(object=found) if found else rule["stem_without_object"]
    if "{subject}" in stem:
        # "Which direction does the gray cube move …?" -> "The gray cube"
        match = re.search(r"does (the .+?) move", sample.question, flags=re.IGNORECASE)
        subject = match.group(1) if match else "the object"
        return stem.format(subject=subject[0].upper() + subject[1:])
    if "{action}" in stem:
        return stem.format(action=sample.question)
    return stem


_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _horizontal_direction(answer: str) -> str:
    lowered = answer.lower()
    return "right" if "right" in lowered else "left" if "left" in lowered else lowered.rstrip(".")


def _number_word(answer: str) -> str:
    text = answer.strip().rstrip(".")
    return _NUMBER_WORDS[int(text)] if text.isdigit() and int(text) < len(_NUMBER_WORDS) else text.lower()


def _scene_after_from(answer: str) -> str:
    return re.sub(r"^\s*from (the |a )?", "", answer.strip(), flags=re.IGNORECASE).rstrip(".")


def _verb_phrase(answer: str) -> str:
    return answer.strip().rstrip(".")[:1].lower() + answer.strip().rstrip(".")[1:]


ANSWER_RULES = {
    "verb_phrase": _verb_phrase,
    "horizontal_direction": _horizontal_direction,
    "number_word": _number_word,
    "scene_after_from": _scene_after_from,
    "lowercase": lambda answer: answer.strip().rstrip(".").lower(),
}

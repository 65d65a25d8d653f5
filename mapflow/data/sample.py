"""The one `Sample` type every benchmark loader returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# How a benchmark writes its options in the prompt (spec §1.2): "(A) text" for TVBench, TOMATO
# and LongVideoBench, "A. text" for Video-MME (whose answer prompt is then "Best option:").
OPTION_FORMATS: dict[str, str] = {
    "paren": "({letter}) {text}",
    "dot": "{letter}. {text}",
}

# `answer_index` of a free-form sample (no candidates; see `Sample.reference_answer`).
NO_ANSWER_INDEX = -1


@dataclass(frozen=True)
class Sample:
    """One video question: multiple choice, or free-form when `reference_answer` is set.

    `source` says where the sample came from (``"json/action_antonym.json[entry 3]"``) so errors can name it.
    A free-form sample (VCGBench) has no candidates, ``answer_index == NO_ANSWER_INDEX`` and its
    reference answer in `reference_answer`; the multiple-choice accessors (`answer`,
    `option_letters`, `answer_letter`, `formatted_options`) raise a `DataError` for it.
    `duration` is the video length in seconds as the benchmark states it (LongVideoBench's frame
    rule uses it); `extra` carries other source metadata as (key, value) string pairs.
    """

    sample_id: str
    task: str
    video_path: Path
    question: str
    candidates: tuple[str, ...]
    answer_index: int
    start: float | None = None
    end: float | None = None
    source: str = ""
    option_format: str = "paren"
    reference_answer: str | None = None
    duration: float | None = None
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def is_free_form(self) -> bool:
        return self.reference_answer is not None

    def require_multiple_choice(self) -> None:
        """Raise a `DataError` naming the sample if it has no candidates to choose from."""
        if self.candidates and not self.is_free_form:
            return
        what = (
            "is a free-form question (reference answer only, no candidates)"
            if self.is_free_form
            else "has no candidates"
        )
        where = f"{self.sample_id} from {self.source}" if self.source else self.sample_id
        raise DataError(f"{what}; this needs a multiple-choice sample", sample=where, field="candidates")

    @property
    def answer(self) -> str:
        self.require_multiple_choice()
        return self.candidates[self.answer_index]

    @property
    def option_letters(self) -> tuple[str, ...]:
        self.require_multiple_choice()
        return tuple(OPTION_LETTERS[i] for i in range(len(self.candidates)))

    @property
    def answer_letter(self) -> str:
        self.require_multiple_choice()
        return OPTION_LETTERS[self.answer_index]

    @property
    def formatted_options(self) -> tuple[str, ...]:
        """The options as the benchmark writes them, e.g. ``("(A) Up.", "(B) Down.")``."""
        if self.option_format not in OPTION_FORMATS:
            raise DataError(
                f"unknown option format {self.option_format!r}; choose one of {sorted(OPTION_FORMATS)}",
                sample=self.sample_id,
                field="option_format",
            )
        template = OPTION_FORMATS[self.option_format]
        return tuple(
            template.format(letter=letter, text=text) for letter, text in zip(self.option_letters, self.candidates)
        )

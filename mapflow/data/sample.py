"""The one `Sample` type every benchmark loader returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Sample:
    """One multiple-choice video question.

    `source` says where the sample came from (``"json/action_antonym.json[entry 3]"``) so errors can name it.
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

    @property
    def answer(self) -> str:
        return self.candidates[self.answer_index]

    @property
    def option_letters(self) -> tuple[str, ...]:
        return tuple(OPTION_LETTERS[i] for i in range(len(self.candidates)))

    @property
    def answer_letter(self) -> str:
        return OPTION_LETTERS[self.answer_index]

"""Spatial and temporal keyword lists for the logit lens (paper Table D), and matching top-1 tokens against them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..embedded import DATA_DIR
from ..errors import MapflowError

KEYWORDS_DIR = DATA_DIR / "keywords"
KINDS = ("spatial", "temporal")


@dataclass(frozen=True)
class KeywordLists:
    name: str
    words: dict[str, tuple[str, ...]]  # kind -> words


def load_keywords(name_or_dir: str = "paper") -> KeywordLists:
    """A shipped list (``paper``, ``released_code``, ``organism``) or a directory with spatial.txt / temporal.txt."""
    directory = Path(name_or_dir)
    if not directory.is_dir():
        directory = KEYWORDS_DIR / name_or_dir
    if not directory.is_dir():
        known = sorted(p.name for p in KEYWORDS_DIR.iterdir() if p.is_dir())
        raise MapflowError(
            f"no keyword lists '{name_or_dir}': give a directory with spatial.txt and temporal.txt "
            f"or one of {', '.join(known)}"
        )
    words = {}
    for kind in KINDS:
        path = directory / f"{kind}.txt"
        if not path.is_file():
            raise MapflowError(f"keyword directory {directory} has no {kind}.txt")
        words[kind] = tuple(dict.fromkeys(read_words(path)))
    return KeywordLists(name=str(name_or_dir), words=words)


def read_words(path: Path) -> list[str]:
    """One word per line, lower-cased; ``#`` starts a comment, blank lines are skipped."""
    lines = (line.split("#")[0].strip().lower() for line in path.read_text().splitlines())
    return [word for word in lines if word]


def first_piece(tokenizer, word: str) -> str:
    """The keyword as the logit lens can see it: its first sub-token, decoded, stripped and lower-cased."""
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if not ids:
        raise MapflowError(f"keyword '{word}' tokenizes to nothing")
    return tokenizer.decode(ids[:1]).strip().lower()


def piece_table(tokenizer, lists: KeywordLists) -> dict[str, tuple[str, str]]:
    """first piece -> (kind, keyword), for the word alone and after a space (byte-level vocabularies split the two
    differently). A piece claimed by two keywords keeps the first (spatial before temporal)."""
    table: dict[str, tuple[str, str]] = {}
    for kind in KINDS:
        for word in lists.words[kind]:
            for variant in (word, " " + word):
                piece = first_piece(tokenizer, variant)
                if piece:
                    table.setdefault(piece, (kind, word))
    return table


def fallback_verbs() -> frozenset[str]:
    """The shipped verb forms (data/keywords/verbs.txt) used when spaCy is not available."""
    return frozenset(read_words(KEYWORDS_DIR / "verbs.txt"))


SPACY_HINT = (
    "verb detection with spaCy needs `pip install spacy` and an English pipeline, which is not on PyPI: "
    "download it on a connected machine (`python -m spacy download en_core_web_lg`, the paper's) or install "
    "its wheel from https://github.com/explosion/spacy-models/releases; mapflow falls back to the word list "
    "data/keywords/verbs.txt"
)


@lru_cache(maxsize=4)
def verb_detector(choice: str = "auto", spacy_model: str = "en_core_web_lg"):
    """A function text -> set of verb token texts, and its name.

    ``spacy``: tokens tagged VERB by a spaCy pipeline (the paper's ``en_core_web_lg``); ``list``: words of the shipped
    verb list; ``auto``: spaCy when it and the pipeline are installed, else the list (with a warning).
    """
    import logging

    if choice not in ("auto", "spacy", "list"):
        raise MapflowError(f"verbs must be auto, spacy or list, got '{choice}'")
    if choice in ("auto", "spacy"):
        try:
            import spacy

            nlp = spacy.load(spacy_model)
        except (ImportError, OSError) as err:
            if choice == "spacy":
                raise MapflowError(f"{err}. {SPACY_HINT}") from None
            logging.getLogger(__name__).warning(
                "spaCy pipeline '%s' unavailable (%s); %s", spacy_model, err, SPACY_HINT
            )
        else:
            return (lambda text: {t.text for t in nlp(text) if t.pos_ == "VERB"}), f"spacy:{spacy_model}"
    verbs = fallback_verbs()
    return (
        lambda text: {w for w in (word.strip(".,;:!?\"'()").lower() for word in text.split()) if w in verbs}
    ), "list"

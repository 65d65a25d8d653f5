"""The clean run and what counts as a correct answer (`StudyContext.clean`, `.accepted_tokens`, `.option_tokens`).

Probabilities are read at the last input position (the one that predicts the answer letter) in float32. The
functions take the `StudyContext` first; studies call them as its methods.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from ..differences import default
from ..knockout.engine import run_naive

CORRECTNESS_RULES = ("text", "token")


@dataclass
class CleanRun:
    """The unmodified forward pass at the last position.

    Two correctness rules: ``correct_text`` is the released code's (the predicted token decoded on its own equals the
    answer letter, or the answer's first token decoded, ignoring case), so a predicted ``▁A`` or ``a`` counts;
    ``correct_token`` compares token ids. ``correct`` follows ``rule`` (``--option correct_by=text|token``, default
    ``text``); stores keep all three so `mapflow.results.metrics.correctness_disagreements` can count where they differ.
    """

    logits: torch.Tensor | None  # None where only the readouts travelled (a remote sample request)
    pred: int
    p_base: float
    gt_token: int
    p_gt_base: float
    correct_text: bool | None = None
    rule: str = "text"

    @property
    def correct_token(self) -> bool:
        return self.pred == self.gt_token

    @property
    def correct(self) -> bool:
        if self.rule == "token" or self.correct_text is None:
            return self.correct_token
        return self.correct_text

    def correctness(self) -> dict:
        """The stored correctness variables (per-sample scalars)."""
        return {
            "correct": ((), self.correct),
            "correct_token": ((), self.correct_token),
            "correct_text": ((), bool(self.correct if self.correct_text is None else self.correct_text)),
        }


def clean_run(ctx, logits: torch.Tensor | None = None) -> CleanRun:
    """The clean prediction at the last position (from ``logits`` when a clean pass already produced them)."""
    logits = run_naive(ctx.adapter, ctx.prepared) if logits is None else logits
    probs = logits.softmax(-1)
    pred = int(probs.argmax())
    gt = ctx.answer_token_id()
    return _clean(ctx, logits, pred, float(probs[pred]), float(probs[gt]))


def clean_from_readouts(ctx, readout: torch.Tensor) -> CleanRun:
    """A `CleanRun` from the (pred, p_pred, p_answer) triple a server-side measurement returns instead of logits."""
    pred, p_base, p_gt_base = readout.tolist()
    return _clean(ctx, None, int(pred), p_base, p_gt_base)


def _clean(ctx, logits, pred: int, p_base: float, p_gt_base: float) -> CleanRun:
    gt = ctx.answer_token_id()
    return CleanRun(
        logits=logits,
        pred=pred,
        p_base=p_base,
        gt_token=gt,
        p_gt_base=p_gt_base,
        correct_text=text_correct(ctx, pred, gt),
        rule=correctness_rule(ctx),
    )


def correctness_rule(ctx) -> str:
    """``--option correct_by``: ``text`` (default) or ``token``."""
    rule = ctx.config.option("correct_by", default("correct_by"))
    if rule not in CORRECTNESS_RULES:
        raise ValueError(f"--option correct_by={rule}: choose one of {', '.join(CORRECTNESS_RULES)}")
    return rule


def text_correct(ctx, pred: int, gt: int) -> bool:
    """The released code's rule: ``decode([pred]).lower() == answer.lower()``, the answer being the true option's
    letter for multiple choice, else the ground-truth token decoded (open-ended answers, verb anchors)."""
    return pred in text_rule_tokens(ctx.adapter.tokenizer, expected_answer_text(ctx, gt))


def expected_answer_text(ctx, gt: int) -> str:
    letter = ctx.prompt.true_letter if ctx.answer_token is None else None
    return letter if letter else ctx.adapter.tokenizer.decode([gt])


class _PerTokenizerCache(weakref.WeakKeyDictionary):
    """The decoded vocabularies, per tokenizer. A remote request ships `StudyContext` (and so this module's functions)
    by value when a traced block reads ``ctx``: the cache then travels as a new, empty one (a weak dictionary itself
    cannot be pickled)."""

    def __reduce__(self):
        return type(self), ()


_TEXT_RULE_CACHE = _PerTokenizerCache()


def text_rule_tokens(tokenizer, expected: str) -> frozenset[int]:
    """Every token id whose piece, decoded on its own, equals ``expected`` ignoring case (e.g. ``A``, ``▁A``, ``a`` on
    a SentencePiece vocabulary). The whole vocabulary is decoded once per tokenizer (about a second for 151k pieces) so
    the rule can travel to a server as ids and be applied where the logits are."""
    pieces = _TEXT_RULE_CACHE.get(tokenizer)
    if pieces is None:
        pieces = [piece.lower() for piece in tokenizer.batch_decode([[i] for i in range(len(tokenizer))])]
        _TEXT_RULE_CACHE[tokenizer] = pieces
    expected = expected.lower()
    return frozenset(i for i, piece in enumerate(pieces) if piece == expected)


def accepted_tokens(ctx) -> tuple[int, ...]:
    """The token ids the run's correctness rule counts as the right answer (``correct_by=token``: the answer's id)."""
    gt = ctx.answer_token_id()
    if correctness_rule(ctx) == "token":
        return (gt,)
    return tuple(sorted(text_rule_tokens(ctx.adapter.tokenizer, expected_answer_text(ctx, gt))))


def option_token_ids(ctx) -> dict[str, int]:
    """Each option letter's answer token, as it would follow the answer prompt."""
    return {
        letter: ctx.adapter.continuation_token_id(ctx.prompt.answer_prompt, letter)
        for letter in ctx.prompt.option_letters
    }

"""Stop rules applied to greedy answers token by token.

A small LLM trained briefly often falls into a loop ("one chair, one chair, one chair, ...") that
runs to the token budget: the tokens cost decode time and the repeats only lower the language
scores. :class:`RepetitionStop` ends the answer as soon as its tail is one block of ``p`` tokens
repeated, and drops the repeats (one copy of the block is kept).

The rule is a function of the generated ids only, checked after every appended token, so every
decoder that applies it after each token (plain, batched, no-cache, speculative) returns the same
ids: greedy equality between them is kept.

:class:`EndGuard` works the other way: it keeps an answer of a listed question family from ending
before it contains a required text (the IDs of the important-objects answer).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bevlm.structures.qa_families import FAMILIES, question_family


@dataclass(frozen=True)
class RepetitionStop:
    """Stop when the answer ends in a block of ``p <= max_period`` tokens repeated back to back.

    A block of period ``p`` must repeat ``max(min_repeats, ceil(min_span / p))`` times before the
    rule fires, so short legitimate repeats (the digits of ``111.1``, "very very") never do.

    Args:
        max_period: longest repeated block looked for, in tokens.
        min_repeats: fewest back-to-back copies of a block that count as a loop.
        min_span: fewest tokens the repeated copies must cover together.
    """

    max_period: int = 8
    min_repeats: int = 3
    min_span: int = 12

    def __post_init__(self) -> None:
        if self.max_period < 1 or self.min_repeats < 2 or self.min_span < 1:
            raise ValueError(f"RepetitionStop: need max_period >= 1, min_repeats >= 2 and min_span >= 1, "
                             f"got {self.max_period}, {self.min_repeats}, {self.min_span}; fix "
                             f"model.test_cfg.repetition_stop in the config")

    def repeats_needed(self, period: int) -> int:
        return max(self.min_repeats, -(-self.min_span // period))

    def truncate_to(self, ids: list[int]) -> int | None:
        """Length to cut ``ids`` to if its tail is a loop (one block kept), else None.

        Only loops that end at the last token are detected, which is what checking after every
        appended token needs.
        """
        n = len(ids)
        for p in range(1, self.max_period + 1):
            r = self.repeats_needed(p)
            if r * p > n:
                continue
            block = ids[n - p:]
            if all(ids[n - (k + 1) * p:n - k * p] == block for k in range(1, r)):
                return n - (r - 1) * p
        return None


def build_stop_rule(cfg: dict | None) -> RepetitionStop | None:
    """A :class:`RepetitionStop` from its config dict (None: no rule)."""
    if cfg is None:
        return None
    cfg = dict(cfg)
    kind = cfg.pop("type", "RepetitionStop")
    if kind != "RepetitionStop":
        raise ValueError(f"unknown stop rule type {kind!r} in model.test_cfg.repetition_stop; use 'RepetitionStop' or None")
    return RepetitionStop(**cfg)


@dataclass(frozen=True)
class EndGuard:
    """An answer to a question of a listed family may not end before it contains a given text.

    DriveLM answers of some families always carry object c-tags: the important-objects answer
    lists the objects and then gives their IDs ("... The IDs of these objects are <c1,...>, ...").
    A model that is unsure at the end of the first sentence may stop there and drop the IDs, which
    every later answer of the frame refers to. With a guard ``{"important_objects": "<c"}`` the
    decoder takes the best token that is not a stop token wherever the greedy choice is a stop token
    and the answer so far lacks ``"<c"``; everywhere else it is plain greedy decoding. The answer
    still ends at its token budget and under the loop stop rule.

    The guard is a function of the question and the generated ids only, applied before the stop
    check of every decoder (plain, batched, no-cache, speculative), so they all return the same ids.

    Args:
        required: ``{family: text}``; families of :mod:`bevlm.structures.qa_families`, matched on a
            round's question text (a round of several questions matches no family).
    """

    required: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        for family, text in self.required:
            if not isinstance(family, str) or not isinstance(text, str) or not text:
                raise ValueError(f"EndGuard: need {{family: non-empty text}}, got {family!r}: {text!r}; fix "
                                 f"model.test_cfg.answer_must_contain in the config")

    def required_text(self, question: str) -> str | None:
        """The text an answer to ``question`` must contain before it may end (None: no guard)."""
        family = question_family(question)
        return dict(self.required).get(family)

    def check(self, question: str, decode: Callable[[list[int]], str]) -> Callable[[list[int]], bool] | None:
        """``may_end(ids)`` for the answer to ``question`` (None when the question is not guarded).

        Args:
            question: the round's question text.
            decode: ids -> text (the tokenizer's decode).
        """
        text = self.required_text(question)
        if text is None:
            return None
        return lambda ids: text in decode(ids)


def build_end_guard(cfg: dict | None) -> EndGuard | None:
    """An :class:`EndGuard` from ``test_cfg.answer_must_contain`` (``{family: text}``; None: off)."""
    if cfg is None:
        return None
    if not isinstance(cfg, dict):
        raise TypeError(f"model.test_cfg.answer_must_contain must be a dict {{family: text}} or None, got "
                        f"{type(cfg).__name__}")
    known = {f for fams in FAMILIES.values() for f in fams}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"model.test_cfg.answer_must_contain: unknown question families {unknown}; use families "
                         f"of bevlm.structures.qa_families.FAMILIES, e.g. 'important_objects'")
    return EndGuard(tuple(sorted(cfg.items())))

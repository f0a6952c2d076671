"""Stop rules applied to greedy answers token by token.

A small LLM trained briefly often falls into a loop ("one chair, one chair, one chair, ...") that
runs to the token budget: the tokens cost decode time and the repeats only lower the language
scores. :class:`RepetitionStop` ends the answer as soon as its tail is one block of ``p`` tokens
repeated, and drops the repeats (one copy of the block is kept).

The rule is a function of the generated ids only, checked after every appended token, so every
decoder that applies it after each token (plain, batched, no-cache, speculative) returns the same
ids: greedy equality between them is kept.

:class:`EndGuard` works the other way: it keeps an answer of a listed question family from ending
before it contains a required text (the IDs of the important-objects answer), optionally also from
looping to its budget without it; :class:`AnswerGuard` is its rule for one answer.
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
class AnswerGuard:
    """The end guard of one answer: which next tokens it forbids, given the answer so far.

    Called as ``guard(ids)`` it says whether the answer ``ids`` may end (it holds ``text``).

    Args:
        text: the text the answer must hold before it may end.
        decode: ids -> text (the tokenizer's decode).
        loops: optional loop shape (a :class:`RepetitionStop`) that the answer may not complete while
            it lacks ``text``; None: only stop tokens are forbidden.
    """

    text: str
    decode: Callable[[list[int]], str]
    loops: RepetitionStop | None = None

    def __call__(self, ids: list[int]) -> bool:
        return self.text in self.decode(ids)

    def forbids(self, ids: list[int], token: int, stop_ids: frozenset[int]) -> bool:
        """Whether ``token`` may not follow the answer ``ids``: a stop token, or (with ``loops``) a
        token that completes a loop, while the answer lacks the text (decoded only when needed)."""
        if token in stop_ids:
            return not self(ids)
        if self.loops is None or self.loops.truncate_to(ids + [token]) is None:
            return False
        return not self(ids)


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

    A model can also drop the IDs by looping: "a gray van to the front of the ego vehicle, a gray
    van to the front of the ego vehicle, ..." to the budget (a block longer than the loop stop
    rule's, which would end the answer there anyway, still without IDs). With ``loops`` (the shape
    of a loop, as :class:`RepetitionStop`'s arguments, e.g. blocks of up to 24 tokens written three
    times back to back) a guarded answer that lacks the text may not complete such a loop either:
    the token that would complete it is passed over for the best other one, so the answer moves on
    after the second copy and its third copy's last token. DriveLM's important-objects answers never
    name one description three times in a row (the mini world's training answers: at most twice).

    The guard is a function of the question and the generated ids only, applied before the stop
    check of every decoder (plain, batched, no-cache, speculative), so they all return the same ids.

    Args:
        required: ``{family: text}``; families of :mod:`bevlm.structures.qa_families`, matched on a
            round's question text (a round of several questions matches no family).
        loops: None, or the loop shape a guarded answer may not complete before it holds its text.
    """

    required: tuple[tuple[str, str], ...]
    loops: RepetitionStop | None = None

    def __post_init__(self) -> None:
        for family, text in self.required:
            if not isinstance(family, str) or not isinstance(text, str) or not text:
                raise ValueError(f"EndGuard: need {{family: non-empty text}}, got {family!r}: {text!r}; fix "
                                 f"model.test_cfg.answer_must_contain in the config")

    def required_text(self, question: str) -> str | None:
        """The text an answer to ``question`` must contain before it may end (None: no guard)."""
        family = question_family(question)
        return dict(self.required).get(family)

    def check(self, question: str, decode: Callable[[list[int]], str]) -> AnswerGuard | None:
        """The :class:`AnswerGuard` of the answer to ``question`` (None when the question is not guarded).

        Args:
            question: the round's question text.
            decode: ids -> text (the tokenizer's decode).
        """
        text = self.required_text(question)
        if text is None:
            return None
        return AnswerGuard(text, decode, self.loops)


def build_end_guard(cfg: dict | None, loops: dict | None = None) -> EndGuard | None:
    """An :class:`EndGuard` from ``test_cfg.answer_must_contain`` (``{family: text}``; None: off) and
    ``test_cfg.answer_guard_loops`` (:class:`RepetitionStop` arguments; None: stop tokens only)."""
    if cfg is None:
        if loops is not None:
            raise ValueError("model.test_cfg.answer_guard_loops is set but answer_must_contain is None: the loop "
                             "guard acts only in guarded answers; set answer_must_contain=dict(important_objects='<c') "
                             "or answer_guard_loops=None")
        return None
    if not isinstance(cfg, dict):
        raise TypeError(f"model.test_cfg.answer_must_contain must be a dict {{family: text}} or None, got "
                        f"{type(cfg).__name__}")
    known = {f for fams in FAMILIES.values() for f in fams}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"model.test_cfg.answer_must_contain: unknown question families {unknown}; use families "
                         f"of bevlm.structures.qa_families.FAMILIES, e.g. 'important_objects'")
    if loops is not None:
        if not isinstance(loops, dict):
            raise TypeError(f"model.test_cfg.answer_guard_loops must be a dict of RepetitionStop arguments "
                            f"(max_period, min_repeats, min_span) or None, got {type(loops).__name__}")
        try:
            loops = RepetitionStop(**loops)
        except (TypeError, ValueError) as err:
            raise ValueError(f"model.test_cfg.answer_guard_loops={loops}: {err}; give max_period, min_repeats and "
                             "min_span, e.g. dict(max_period=24, min_repeats=3, min_span=12)") from err
    return EndGuard(tuple(sorted(cfg.items())), loops)

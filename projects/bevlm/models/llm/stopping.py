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
looping to its budget without it (a block repeated back to back, :class:`RepetitionStop`'s shape, or
a phrase recurring anywhere in the answer, :class:`Recurrence`); :class:`AnswerGuard` is its rule
for one answer.
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
class Recurrence:
    """A phrase of ``ngram`` tokens written more than ``max_count`` times anywhere in an answer.

    :class:`RepetitionStop` sees only blocks repeated back to back. A model can also wander between
    a few phrases ("a gray van to the front of the ego vehicle, a gray van to the back of the ego
    vehicle, a gray van to the front ...") in an order no fixed block repeats; every phrase still
    recurs. The mini world's important-objects answers (train and val of the three domains, 1440
    answers) never hold a 12-token phrase more than twice.

    Args:
        ngram: phrase length in tokens.
        max_count: most occurrences of one phrase allowed (overlapping occurrences count).
    """

    ngram: int = 12
    max_count: int = 2

    def __post_init__(self) -> None:
        if self.ngram < 1 or self.max_count < 1:
            raise ValueError(f"Recurrence: need ngram >= 1 and max_count >= 1, got {self.ngram}, {self.max_count}; "
                             "fix model.test_cfg.answer_guard_recurrence in the config")

    def completes(self, ids: list[int]) -> bool:
        """Whether the last ``ngram`` tokens of ``ids`` are a phrase's ``max_count + 1``-th occurrence.

        Checked after every appended token, this finds the first token that makes any phrase recur
        too often (an earlier one would have been found earlier).
        """
        n = self.ngram
        if len(ids) < n + self.max_count:
            return False
        tail = ids[-n:]
        first, seen = tail[0], 0
        for i in range(len(ids) - n):
            if ids[i] == first and ids[i:i + n] == tail:
                seen += 1
                if seen >= self.max_count:
                    return True
        return False


@dataclass(frozen=True)
class AnswerGuard:
    """The end guard of one answer: which next tokens it forbids, given the answer so far.

    Called as ``guard(ids)`` it says whether the answer ``ids`` may end (it holds ``text``).

    Args:
        text: the text the answer must hold before it may end.
        decode: ids -> text (the tokenizer's decode).
        loops: optional loop shape (a :class:`RepetitionStop`) that the answer may not complete while
            it lacks ``text``; None: only stop tokens are forbidden.
        recurrence: optional :class:`Recurrence` that the answer may not complete while it lacks
            ``text`` (a phrase written once more than allowed); None: not checked.
    """

    text: str
    decode: Callable[[list[int]], str]
    loops: RepetitionStop | None = None
    recurrence: Recurrence | None = None

    def __call__(self, ids: list[int]) -> bool:
        return self.text in self.decode(ids)

    def forbids(self, ids: list[int], token: int, stop_ids: frozenset[int]) -> bool:
        """Whether ``token`` may not follow the answer ``ids``: a stop token, or (with ``loops`` /
        ``recurrence``) a token that completes a loop or a phrase's surplus occurrence, while the
        answer lacks the text (decoded only when needed)."""
        if token in stop_ids:
            return not self(ids)
        after = ids + [token]
        looped = self.loops is not None and self.loops.truncate_to(after) is not None
        if not looped and (self.recurrence is None or not self.recurrence.completes(after)):
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

    A loop need not repeat one block back to back: with ``recurrence`` (a :class:`Recurrence`, e.g.
    no 12-token phrase more than twice) a guarded answer that lacks the text may not write any phrase
    once more than allowed, wherever its earlier copies are.

    Args:
        required: ``{family: text}``; families of :mod:`bevlm.structures.qa_families`, matched on a
            round's question text (a round of several questions matches no family).
        loops: None, or the loop shape a guarded answer may not complete before it holds its text.
        recurrence: None, or the phrase recurrence a guarded answer may not complete before it holds
            its text.
    """

    required: tuple[tuple[str, str], ...]
    loops: RepetitionStop | None = None
    recurrence: Recurrence | None = None

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
        return AnswerGuard(text, decode, self.loops, self.recurrence)


def _guard_shape(value: dict | None, cls: type, key: str, needs: str, example: str):
    """``cls(**value)`` for the config key ``model.test_cfg.<key>`` (None stays None), or an error
    naming the key and the arguments it takes."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"model.test_cfg.{key} must be a dict of {cls.__name__} arguments ({needs}) or None, got "
                        f"{type(value).__name__}")
    try:
        return cls(**value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"model.test_cfg.{key}={value}: {err}; give {needs}, e.g. {example}") from err


def build_end_guard(cfg: dict | None, loops: dict | None = None,
                    recurrence: dict | None = None) -> EndGuard | None:
    """An :class:`EndGuard` from ``test_cfg.answer_must_contain`` (``{family: text}``; None: off),
    ``test_cfg.answer_guard_loops`` (:class:`RepetitionStop` arguments; None: not checked) and
    ``test_cfg.answer_guard_recurrence`` (:class:`Recurrence` arguments; None: not checked)."""
    if cfg is None:
        for name, value in (("answer_guard_loops", loops), ("answer_guard_recurrence", recurrence)):
            if value is not None:
                raise ValueError(f"model.test_cfg.{name} is set but answer_must_contain is None: the guard acts "
                                 "only in guarded answers; set answer_must_contain=dict(important_objects='<c') "
                                 f"or {name}=None")
        return None
    if not isinstance(cfg, dict):
        raise TypeError(f"model.test_cfg.answer_must_contain must be a dict {{family: text}} or None, got "
                        f"{type(cfg).__name__}")
    known = {f for fams in FAMILIES.values() for f in fams}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"model.test_cfg.answer_must_contain: unknown question families {unknown}; use families "
                         f"of bevlm.structures.qa_families.FAMILIES, e.g. 'important_objects'")
    loops = _guard_shape(loops, RepetitionStop, "answer_guard_loops", "max_period, min_repeats and min_span",
                         "dict(max_period=24, min_repeats=3, min_span=12)")
    recurrence = _guard_shape(recurrence, Recurrence, "answer_guard_recurrence", "ngram and max_count",
                              "dict(ngram=12, max_count=2)")
    return EndGuard(tuple(sorted(cfg.items())), loops, recurrence)

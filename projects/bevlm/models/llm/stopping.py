"""Stop rules applied to greedy answers token by token.

A small LLM trained briefly often falls into a loop ("one chair, one chair, one chair, ...") that
runs to the token budget: the tokens cost decode time and the repeats only lower the language
scores. :class:`RepetitionStop` ends the answer as soon as its tail is one block of ``p`` tokens
repeated, and drops the repeats (one copy of the block is kept).

The rule is a function of the generated ids only, checked after every appended token, so every
decoder that applies it after each token (plain, batched, no-cache, speculative) returns the same
ids: greedy equality between them is kept.
"""
from __future__ import annotations

from dataclasses import dataclass


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

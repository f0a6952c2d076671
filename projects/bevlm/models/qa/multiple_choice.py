"""Multiple-choice questions answered by likelihood instead of by decoding a letter.

The official DriveLM test asks some questions (behaviour, moving status) as multiple choice: the
open-ended question, then ``" Please select the correct answer from the following options: A. ...
B. ... C. ... D. ..."``; the answer is a letter. A model that learned the open-ended form can pick
the option it finds most likely as the answer to the open-ended stem: for each option, the
log-probability that the model, asked the stem, answers exactly that option's text (end token
included), all options of a frame in one batched forward over the frame's prefix cache. This is
the cloze-style scoring of multiple-choice benchmarks (e.g. lm-evaluation-harness), with the
unnormalised sequence log-probability: the option the model would most likely write as its whole
answer. Nothing is decoded for these questions; the answer is the chosen letter.

``model.test_cfg.multiple_choice='likelihood'`` switches it on (``'generate'``, the default,
decodes the letter as for any other question).
"""
from __future__ import annotations

import dataclasses

from bevlm.structures import QAItem
from bevlm.structures.qa_families import split_multiple_choice

from .policy import QAPolicy

__all__ = ["is_multiple_choice", "choose_by_likelihood"]


def is_multiple_choice(qa: QAItem) -> bool:
    """True when the question carries the official option list."""
    return split_multiple_choice(qa.question) is not None


def choose_by_likelihood(llm, cache, items: list[QAItem], policy: QAPolicy) -> tuple[dict[int, str], dict]:
    """The letter of the likeliest option of each multiple-choice item.

    Each option is scored as the answer of a one-question round with the stem as its question, in
    the policy's training format (``policy.question_text`` / ``policy.answer_text``), so the
    scored text is exactly what the model was trained to write for the open-ended question.

    Args:
        llm: :class:`bevlm.models.llm.HFCausalLM` (``answer_logprobs``).
        cache: the frame's prefix cache (not mutated).
        items: the frame's multiple-choice items (:func:`is_multiple_choice`).
        policy: the model's :class:`QAPolicy`.

    Returns:
        ``({official index: letter}, {official index: {letter: log-probability}})``; ties go to the
        earlier letter.

    Raises:
        ValueError: an item without an option list.
    """
    pairs, owners = [], []
    for qa in items:
        parsed = split_multiple_choice(qa.question)
        if parsed is None:
            raise ValueError(f"choose_by_likelihood: QA index {qa.index} has no option list: {qa.question[:80]!r}")
        stem, options = parsed
        for letter, text in options.items():
            one = [dataclasses.replace(qa, question=stem, answer=text)]
            pairs.append((policy.question_text(one), policy.answer_text(one)))
            owners.append((qa.index, letter))
    scores: dict[int, dict[str, float]] = {}
    for (index, letter), logp in zip(owners, llm.answer_logprobs(cache, pairs) if pairs else []):
        scores.setdefault(index, {})[letter] = logp
    choice = {index: max(s, key=lambda k: (s[k], -ord(k))) for index, s in scores.items()}
    return choice, scores

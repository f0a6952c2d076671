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

``model.test_cfg.multiple_choice='likelihood'`` switches it on (``'generate'``, the default of
:class:`~bevlm.models.detectors.test_cfg.TestConfig`, decodes the letter as for any other question).

``'calibrated'`` subtracts the answer prior: each option's score is its log-probability given
the frame minus its log-probability given a *content-free frame* (the mean prefix of training
frames, :class:`OptionPrior`), i.e. the pointwise mutual information between option and frame.
This is contextual calibration (Zhao et al., 2021, "Calibrate Before Use") / PMI scoring
(Holtzman et al., 2021, "Surface Form Competition"): an option that the model writes often
whatever it sees loses its head start, and what remains is what the frame adds.
"""
from __future__ import annotations

import dataclasses

from bevlm.structures import QAItem
from bevlm.structures.qa_families import split_multiple_choice

from .policy import QAPolicy

__all__ = ["is_multiple_choice", "choose_by_likelihood", "score_pairs", "OptionPrior"]


def is_multiple_choice(qa: QAItem) -> bool:
    """True when the question carries the official option list."""
    return split_multiple_choice(qa.question) is not None


class OptionPrior:
    """``log p(answer | content-free frame, question)``: the answer prior of calibrated scoring.

    The content-free frame is a fixed prefix (:meth:`BEVVLM.set_mc_prior`: the mean prefix
    embeddings of training frames), prefilled once; each distinct ``(question, answer)`` pair is
    scored once and remembered (the official option texts repeat across frames). The memo is per
    active LoRA adapter (multi-LoRA models answer each domain with its own adapter).

    Args:
        llm: :class:`bevlm.models.llm.HFCausalLM`.
        prefix_embeds: ``[1, P, D]`` content-free prefix, in the LLM's embedding space.
    """

    def __init__(self, llm, prefix_embeds) -> None:
        if prefix_embeds.dim() != 3 or prefix_embeds.shape[0] != 1:
            raise ValueError(f"OptionPrior: prefix_embeds must be [1, P, D], got {tuple(prefix_embeds.shape)}")
        self.llm, self.prefix = llm, prefix_embeds.detach()
        self._caches: dict = {}
        self._memo: dict = {}

    def logprobs(self, pairs: list[tuple[str, str]]) -> list[float]:
        """The prior log-probability of each pair (new pairs in one batched forward)."""
        adapter = getattr(self.llm.model, "active_adapter", None)
        missing = [p for p in dict.fromkeys(pairs) if (adapter, p) not in self._memo]
        if missing:
            if adapter not in self._caches:
                self._caches[adapter] = self.llm.prefill(self.prefix)
            for pair, logp in zip(missing, self.llm.answer_logprobs(self._caches[adapter], missing)):
                self._memo[adapter, pair] = logp
        return [self._memo[adapter, p] for p in pairs]


def choose_by_likelihood(llm, cache, items: list[QAItem], policy: QAPolicy,
                         prior: OptionPrior | None = None) -> tuple[dict[int, str], dict]:
    """The letter of the likeliest option of each multiple-choice item.

    Each option is scored as the answer of a one-question round with the stem as its question, in
    the policy's training format (``policy.question_text`` / ``policy.answer_text``), so the
    scored text is exactly what the model was trained to write for the open-ended question.

    Args:
        llm: :class:`bevlm.models.llm.HFCausalLM` (``answer_logprobs``).
        cache: the frame's prefix cache (not mutated).
        items: the frame's multiple-choice items (:func:`is_multiple_choice`).
        policy: the model's :class:`QAPolicy`.
        prior: None (plain likelihood) or the :class:`OptionPrior` whose log-probability of the
            same pair is subtracted (calibrated scoring).

    Returns:
        ``({official index: letter}, {official index: {letter: score}})``, the score being the
        log-probability (minus the prior's with ``prior``); ties go to the earlier letter.

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
    scores = score_pairs(llm, cache, pairs, owners, prior=prior)
    choice = {index: max(s, key=lambda k: (s[k], -ord(k))) for index, s in scores.items()}
    return choice, scores


def score_pairs(llm, cache, pairs: list[tuple[str, str]], owners: list[tuple[int, str]],
                prior: OptionPrior | None = None, baselines: list[tuple[str, str]] | None = None) -> dict:
    """Score each (question, answer) pair as the answer of a one-question round on the frame's cache.

    Args:
        llm: :class:`bevlm.models.llm.HFCausalLM` (``answer_logprobs``).
        cache: the frame's prefix cache (not mutated).
        pairs: ``[(question text, answer text)]`` in the policy's training format.
        owners: ``[(official index, key)]``, one per pair: where its score goes.
        prior: None or the content-free frame whose log-probability of the same pair is subtracted.
        baselines: None or one pair per pair, scored on the same frame in the same batched forward
            and subtracted (e.g. the question without its object).

    Returns:
        ``{official index: {key: score}}``, the score being the log-probability minus what
        ``prior`` / ``baselines`` give; keys keep the order of ``pairs``.
    """
    if baselines is not None and len(baselines) != len(pairs):
        raise ValueError(f"score_pairs: {len(baselines)} baseline pairs for {len(pairs)} pairs")
    if not pairs:
        return {}
    if baselines is not None:  # both in one batched forward over the frame's cache
        both = llm.answer_logprobs(cache, pairs + baselines)
        logps = [lp - base for lp, base in zip(both[:len(pairs)], both[len(pairs):])]
    else:
        logps = llm.answer_logprobs(cache, pairs)
    if prior is not None:
        logps = [lp - base for lp, base in zip(logps, prior.logprobs(pairs))]
    scores: dict[int, dict[str, float]] = {}
    for (index, key), logp in zip(owners, logps):
        scores.setdefault(index, {})[key] = logp
    return scores

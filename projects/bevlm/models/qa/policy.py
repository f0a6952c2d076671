"""QA-round policies: how many question/answer blocks a key frame's DriveLM graph is asked in.

* ``'full'``: one block per question (today's model: ~66 blocks per frame, each decoded
  independently after the shared prefix, all of them batchable).
* ``'three_rounds'``: the DriveLM graph order perception -> prediction -> planning+behavior
  (Sima et al., 2024, "DriveLM: Driving with Graph Visual Question Answering"), one numbered
  round per stage group, so at most 3 blocks.
* ``'single'``: every question of the frame in one numbered round.

``max_questions_per_round = M`` splits each round into consecutive chunks of at most M
questions: ``three_rounds`` then gives ``sum over the 3 stage groups of ceil(n_group / M)``
rounds and ``single`` gives ``ceil(N / M)``; ``full`` is unaffected.

The same policy object builds the training blocks (:func:`blocks_for_policy`) and the test-time
queries and parses the answers (:func:`answer_frame`), so the model is asked in exactly the
format it was trained on. Rounds use the text format of :mod:`bevlm.models.qa.format`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from bevlm.structures import QAItem

from ..llm.prompt import chat_layout, prompt_tokens
from .decoding import FrameDecoder, GreedyBatchDecoder
from .format import (ONE_SENTENCE_FAMILIES, PromptTemplate, format_round_answer, parse_round_answer,
                        postprocess_answer)

POLICY_MODES = ("full", "three_rounds", "single")

#: Stage groups of the ``three_rounds`` policy, in the order they are asked.
STAGE_ROUNDS: tuple[tuple[str, ...], ...] = (("perception",), ("prediction",), ("planning", "behavior"))


class QAPolicy:
    """Groups a frame's questions into rounds and owns their text format.

    Args:
        mode: ``'full'`` | ``'three_rounds'`` | ``'single'`` (see the module docstring).
        max_questions_per_round: split rounds into chunks of at most this many questions
            (None = no limit). Ignored by ``'full'``.
        template: :class:`PromptTemplate` or a dict of its arguments (None = the default,
            which reproduces today's prompt).
        trim_one_sentence: post-process answers of the one-sentence families
            (``one_sentence_families``) to their first complete sentence and multiple-choice
            answers to their option letter (:func:`postprocess_answer`).
        one_sentence_families: families trimmed when ``trim_one_sentence`` (None = the
            YN and CL families of :data:`ONE_SENTENCE_FAMILIES`).
        stop_strings: generated answers are cut at the first of these strings.
    """

    def __init__(self, mode: str = "full", max_questions_per_round: int | None = None,
                 template: PromptTemplate | dict | None = None, trim_one_sentence: bool = False,
                 one_sentence_families: list[str] | tuple[str, ...] | None = None,
                 stop_strings: list[str] | tuple[str, ...] = ()) -> None:
        if mode not in POLICY_MODES:
            raise ValueError(f"QAPolicy: mode={mode!r} is not one of {POLICY_MODES}; fix qa_policy.mode "
                             f"in the model config")
        if max_questions_per_round is not None and max_questions_per_round < 1:
            raise ValueError(f"QAPolicy: max_questions_per_round must be >= 1 or None, got "
                             f"{max_questions_per_round}")
        if isinstance(template, dict):
            template = PromptTemplate(**template)
        if any(not s for s in stop_strings):
            raise ValueError("QAPolicy: stop_strings contains an empty string; remove it")
        self.mode = mode
        self.max_questions_per_round = max_questions_per_round
        self.template = template if template is not None else PromptTemplate()
        self.trim_one_sentence = trim_one_sentence
        self.one_sentence_families = (ONE_SENTENCE_FAMILIES if one_sentence_families is None
                                      else frozenset(one_sentence_families))
        self.stop_strings = tuple(stop_strings)

    def __repr__(self) -> str:
        return (f"QAPolicy(mode={self.mode!r}, max_questions_per_round={self.max_questions_per_round}, "
                f"trim_one_sentence={self.trim_one_sentence}, stop_strings={self.stop_strings})")

    @property
    def structured(self) -> bool:
        """True when blocks use the numbered round format (every mode but ``'full'``)."""
        return self.mode != "full"

    # ------------------------------------------------------------------ grouping
    def _chunks(self, items: list[QAItem]) -> list[list[QAItem]]:
        m = self.max_questions_per_round
        if m is None:
            return [items]
        return [items[i:i + m] for i in range(0, len(items), m)]

    def rounds(self, qa_items: list[QAItem]) -> list[list[QAItem]]:
        """Group a frame's QA into rounds; every item appears in exactly one round.

        Args:
            qa_items: the frame's QA (order kept inside each round).

        Returns:
            The rounds, in the order they are asked; no round is empty.

        Raises:
            ValueError: ``'three_rounds'`` meets an item whose stage is not a DriveLM stage.
        """
        items = list(qa_items)
        if not items:
            return []
        if self.mode == "full":
            return [[qa] for qa in items]
        if self.mode == "single":
            return self._chunks(items)
        group_of = {stage: g for g, stages in enumerate(STAGE_ROUNDS) for stage in stages}
        groups: list[list[QAItem]] = [[] for _ in STAGE_ROUNDS]
        for qa in items:
            if qa.stage not in group_of:
                raise ValueError(f"QAPolicy('three_rounds'): QA index {qa.index} has stage {qa.stage!r}, "
                                 f"not one of {sorted(group_of)}; fix the QA data or use mode='single'")
            groups[group_of[qa.stage]].append(qa)
        return [chunk for group in groups if group for chunk in self._chunks(group)]

    # ------------------------------------------------------------------ text
    def question_text(self, round_items: list[QAItem]) -> str:
        """Text of the question block of one round (a plain question for ``'full'``)."""
        if not self.structured:
            if len(round_items) != 1:
                raise ValueError(f"QAPolicy('full'): a round has exactly one question, got {len(round_items)}")
            return self.template.question_text(round_items[0].question)
        return self.template.round_text([qa.question for qa in round_items])

    def answer_text(self, round_items: list[QAItem]) -> str:
        """Ground-truth answer text of one round (the training target)."""
        if not self.structured:
            return round_items[0].answer
        return format_round_answer([qa.answer for qa in round_items], self.template.answer_tag)

    def split_answers(self, round_items: list[QAItem], text: str) -> list[str]:
        """Per-question answers of a generated round text, post-processed by the stop rules."""
        raw = [text] if not self.structured else parse_round_answer(text, len(round_items),
                                                                    self.template.answer_tag)
        return [self.postprocess(qa, a) for qa, a in zip(round_items, raw)]

    def postprocess(self, qa: QAItem, answer: str) -> str:
        """Apply ``stop_strings`` and (if ``trim_one_sentence``) the one-sentence / MC rules."""
        if not self.trim_one_sentence and not self.stop_strings:
            return answer
        families = self.one_sentence_families if self.trim_one_sentence else None
        question = qa.question if self.trim_one_sentence else ""
        return postprocess_answer(answer, qa.family, question, families, self.stop_strings)


def blocks_for_policy(qa_items: list[QAItem], policy: QAPolicy) -> list[tuple[str, str]]:
    """Training blocks of a frame's QA chunk in the policy's format.

    Args:
        qa_items: the QA of one training sample (a chunk of a frame, or the whole frame).
        policy: the :class:`QAPolicy` used at test time.

    Returns:
        ``(question_text, answer_text)`` per round; for ``'full'`` with the default template
        exactly ``[(qa.question, qa.answer) for qa in qa_items]`` (today's blocks).
    """
    return [(policy.question_text(r), policy.answer_text(r)) for r in policy.rounds(qa_items)]


# --------------------------------------------------------------------------- budgets
def family_token_budget(family: str, default: int, overrides: dict | None = None) -> int:
    """Answer length budget (new tokens) of one question family.

    Args:
        family: family name (:mod:`bevlm.structures.qa_families`).
        default: budget of families without an override.
        overrides: ``{family: budget}`` (e.g. long c-tag lists vs "Yes."/"No.").

    Returns:
        The budget, >= 1.
    """
    budget = (overrides or {}).get(family, default)
    if not isinstance(budget, int) or budget < 1:
        raise ValueError(f"token budget of family {family!r} is {budget!r}; budgets must be integers >= 1 "
                         f"(fix max_new_tokens / family_max_new_tokens in the model config)")
    return budget


def budget_shortfalls(qa_items: list[QAItem], encode: Callable[[str], list[int]], default: int,
                      overrides: dict | None = None) -> dict[str, dict]:
    """Question families whose reference answers do not fit their decode budget.

    A reference answer longer than its family's budget can never be reproduced: the decoder stops
    at the budget and the answer is cut (e.g. the last c-tags of a five-object list). Checking
    the test references before decoding makes such a budget visible instead of silently lowering
    the scores.

    Args:
        qa_items: items with reference answers (those with ``answer == ''`` are ignored).
        encode: ``text -> token ids`` without special tokens (the LLM tokenizer).
        default, overrides: ``test_cfg.max_new_tokens`` and ``test_cfg.family_max_new_tokens``.

    Returns:
        ``{family: {"budget", "longest", "over", "answers"}}`` for each family with at least one
        reference longer than its budget (``over`` of ``answers`` references are longer);
        empty when every reference fits.
    """
    lengths: dict[str, list[int]] = {}
    for qa in qa_items:
        if qa.answer:
            lengths.setdefault(qa.family, []).append(len(encode(qa.answer)))
    out = {}
    for family, ls in sorted(lengths.items()):
        budget = family_token_budget(family, default, overrides)
        over = sum(n > budget for n in ls)
        if over:
            out[family] = {"budget": budget, "longest": max(ls), "over": over, "answers": len(ls)}
    return out


def round_overhead_tokens(encode: Callable[[str], list[int]], n: int, tag: str = "A") -> int:
    """Tokens a round's answer format adds around ``n`` answers.

    Measured as the tokens of the empty formatted round (``"A1:\\nA2:\\n..."``) plus one token per
    item for the space after the colon (which may or may not merge with the answer's first word).

    Args:
        encode: ``text -> token ids`` without special tokens (the LLM tokenizer).
        n: number of questions in the round.
        tag: the answer label.

    Returns:
        The overhead in tokens (0 for ``n == 0``).
    """
    if n == 0:
        return 0
    return len(encode(format_round_answer([""] * n, tag))) + n


def round_token_budget(round_items: list[QAItem], policy: QAPolicy, default: int,
                       overrides: dict | None = None,
                       encode: Callable[[str], list[int]] | None = None) -> int:
    """Budget of a round: sum of its questions' family budgets + the format's separators.

    Args:
        round_items: the questions of the round.
        policy: the policy (plain blocks have no separators).
        default, overrides: as in :func:`family_token_budget`.
        encode: tokenizer function for :func:`round_overhead_tokens`; None estimates
            4 tokens per item (``"A12:"`` + newline + space).

    Returns:
        Max new tokens of the round.
    """
    total = sum(family_token_budget(qa.family, default, overrides) for qa in round_items)
    if not policy.structured:
        return total
    n = len(round_items)
    overhead = round_overhead_tokens(encode, n, policy.template.answer_tag) if encode else 4 * n
    return total + overhead


# --------------------------------------------------------------------------- inference
@dataclass
class FrameAnswers:
    """Answers of one frame under a policy.

    Attributes:
        answers: official QA index -> answer text.
        tokens: generated tokens including one stop token per round.
        rounds: number of blocks asked.
        raw: decoded text of each round, in round order (for debugging the format).
    """

    answers: dict[int, str]
    tokens: int
    rounds: int
    raw: list[str]


def answer_frame(llm, cache, qa_items: list[QAItem], policy: QAPolicy, default_budget: int,
                 budget_overrides: dict | None = None, decoder: FrameDecoder | None = None) -> FrameAnswers:
    """Answer a frame's QA graph under ``policy`` from the frame's prefix cache.

    Args:
        llm: :class:`bevlm.models.llm.HFCausalLM` (uses ``generate_ids_batch`` /
            ``generate_ids``, ``decode_ids`` and ``tokenizer``).
        cache: the frame's :class:`PrefixCache` (``llm.prefill(prefix)``), not mutated.
        qa_items: the frame's QA.
        policy: the :class:`QAPolicy`.
        default_budget, budget_overrides: per family answer budgets (``test_cfg.max_new_tokens``
            and ``test_cfg.family_max_new_tokens`` of the model).
        decoder: the :class:`~bevlm.models.qa.decoding.FrameDecoder` that decodes the rounds
            (greedy batched, greedy batch-1 or self-speculative: all give the plain greedy
            ids); None = :class:`~bevlm.models.qa.decoding.GreedyBatchDecoder` over ``llm``.

    Returns:
        :class:`FrameAnswers`; every item of ``qa_items`` has an answer ('' when a round's
        output misses it).
    """
    rounds = policy.rounds(qa_items)
    if not rounds:
        return FrameAnswers({}, 0, 0, [])

    def encode(text: str) -> list[int]:
        return list(llm.tokenizer(text, add_special_tokens=False)["input_ids"])

    texts = [policy.question_text(r) for r in rounds]
    budgets = [round_token_budget(r, policy, default_budget, budget_overrides, encode) for r in rounds]
    ids = (decoder if decoder is not None else GreedyBatchDecoder(llm)).decode(cache, texts, budgets)
    answers: dict[int, str] = {}
    raw = []
    for round_items, round_ids in zip(rounds, ids):
        text = llm.decode_ids(round_ids)
        raw.append(text)
        for qa, answer in zip(round_items, policy.split_answers(round_items, text)):
            answers[qa.index] = answer
    return FrameAnswers(answers, sum(len(i) + 1 for i in ids), len(rounds), raw)


def apply_system_prompt(llm, template: PromptTemplate) -> None:
    """Re-derive the LLM wrapper's prompt pieces with ``template.system`` (no-op when None).

    Call it once after building the model and before training/inference: the prefix text (and
    so every cache and packed batch built afterwards) then carries the new system turn.

    Args:
        llm: :class:`bevlm.models.llm.HFCausalLM`.
        template: the policy's :class:`PromptTemplate`.
    """
    if template.system is None:
        return
    llm.layout = chat_layout(llm.tokenizer, template.system)
    llm.prompt = prompt_tokens(llm.tokenizer, llm.layout)

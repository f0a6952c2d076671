"""Text formats of QA rounds and answer post-processing (pure string functions).

A *round* asks several questions of one key frame in ONE question/answer block after the
frame's shared prefix, in a numbered format the model is trained on::

    question text:  "Q1: What is the moving status of object <c1,CAM_FRONT,712.5,510.0>?\\n"
                    "Q2: Would <c1,CAM_FRONT,712.5,510.0> be in the moving direction of ..."
    answer text:    "A1: Going ahead.\\nA2: No."

Fewer, longer blocks trade the per-question overhead of the full DriveLM graph (one block per
question) against one longer sequential decode; the round structure follows the
perception -> prediction -> planning graph of DriveLM (Sima et al., 2024, "DriveLM: Driving with
Graph Visual Question Answering") and the multi-question prompting of batch prompting
(Cheng et al., 2023, "Batch Prompting: Efficient Inference with Large Language Model APIs").

Items are separated by newlines, so item texts must be newline-free: newlines (and any run of
whitespace containing one) are collapsed to one space and outer whitespace is stripped. With
that normalisation, ``parse_round_answer(format_round_answer(a), len(a)) == a`` for every list
``a`` of normalised answers (c-tags, commas, periods and empty answers included), except
answers that themselves contain the next item's tag (``" A3: "`` inside answer 2), which
DriveLM answers never do.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from bevlm.structures.qa_families import MC_SUFFIX

_NEWLINE_RUN = re.compile(r"\s*[\r\n]+\s*")


@dataclass(frozen=True)
class PromptTemplate:
    """Configurable text around questions; the defaults reproduce the model's prompt exactly.

    Args:
        system: text of the system turn; None keeps the LLM wrapper's own ``system_prompt``
            (the default, i.e. no change). Apply a string with
            :func:`bevlm.models.qa.policy.apply_system_prompt`.
        question_prefix: text before every question block (before ``Q1:`` in a round).
        question_suffix: text after every question block.
        round_instruction: one line put before the numbered questions of a round
            (e.g. ``"Answer every question on its own line as A<i>: <answer>."``); '' = none.
        question_tag: label of the numbered questions (``"Q"`` -> ``Q1:``).
        answer_tag: label of the numbered answers (``"A"`` -> ``A1:``).
    """

    system: str | None = None
    question_prefix: str = ""
    question_suffix: str = ""
    round_instruction: str = ""
    question_tag: str = "Q"
    answer_tag: str = "A"

    def __post_init__(self) -> None:
        for name in ("question_tag", "answer_tag"):
            tag = getattr(self, name)
            if not re.fullmatch(r"[A-Za-z]+", tag):
                raise ValueError(f"PromptTemplate.{name}={tag!r}: must be letters only (e.g. 'Q', 'A'); "
                                 f"fix the qa_policy.template config")
        if self.question_tag == self.answer_tag:
            raise ValueError(f"PromptTemplate: question_tag and answer_tag are both {self.answer_tag!r}; "
                             f"use two different labels")
        if "\n" in self.round_instruction:
            raise ValueError("PromptTemplate.round_instruction must be one line (no newline)")

    def question_text(self, question: str) -> str:
        """Block text of one plain (unnumbered) question: ``prefix + question + suffix``."""
        return f"{self.question_prefix}{question}{self.question_suffix}"

    def round_text(self, questions: list[str]) -> str:
        """Block text of a numbered round (:func:`pack_round` inside prefix/instruction/suffix)."""
        body = pack_round(questions, self.question_tag)
        if self.round_instruction:
            body = f"{self.round_instruction}\n{body}"
        return f"{self.question_prefix}{body}{self.question_suffix}"


def normalise_item(text: str) -> str:
    """One item of a round: newline runs collapsed to one space, outer whitespace stripped."""
    return _NEWLINE_RUN.sub(" ", text).strip()


def _numbered(items: list[str], tag: str) -> str:
    lines = []
    for i, item in enumerate(items, start=1):
        item = normalise_item(item)
        lines.append(f"{tag}{i}: {item}" if item else f"{tag}{i}:")
    return "\n".join(lines)


def pack_round(questions: list[str], tag: str = "Q") -> str:
    """Several questions as one numbered block, ``"Q1: ...\\nQ2: ..."``.

    Args:
        questions: question texts (c-tags verbatim); newlines are collapsed to spaces.
        tag: the question label.

    Returns:
        The packed text (no trailing newline).

    Raises:
        ValueError: ``questions`` is empty.
    """
    if not questions:
        raise ValueError("pack_round: got no questions; a round needs at least one")
    return _numbered(questions, tag)


def format_round_answer(answers: list[str], tag: str = "A") -> str:
    """Answers of a round as the model should write them, ``"A1: ...\\nA2: ..."``.

    Args:
        answers: one answer per question, in question order ('' allowed: ``"A3:"``).
        tag: the answer label.

    Returns:
        The formatted text (no trailing newline).

    Raises:
        ValueError: ``answers`` is empty.
    """
    if not answers:
        raise ValueError("format_round_answer: got no answers; a round needs at least one")
    return _numbered(answers, tag)


def parse_round_answer(text: str, n: int, tag: str = "A") -> list[str]:
    """Split generated round text back into ``n`` answers.

    Rules: lines that start with ``A<k>:`` (k in 1..n, spaces around the colon tolerated)
    start answer k; the first occurrence of each k wins; text before the first tag, untagged
    lines, tags out of range and everything after a repeated tag are ignored; if a tagged
    line itself contains the next tag (``"A1: Yes. A2: No."``, one line) it is split there.
    Missing answers are ''.

    Args:
        text: decoded model output for one round.
        n: number of questions of the round.
        tag: the answer label.

    Returns:
        ``n`` stripped answers, in question order.
    """
    if n < 0:
        raise ValueError(f"parse_round_answer: n must be >= 0, got {n}")
    answers: list[str | None] = [None] * n
    line_re = re.compile(rf"^\s*{re.escape(tag)}\s*(\d+)\s*:(.*)$")
    for line in text.splitlines():
        m = line_re.match(line)
        if m is None:
            continue
        k, rest = int(m.group(1)), m.group(2)
        while 1 <= k <= n and answers[k - 1] is None:  # inline next tags on the same line
            nxt = re.search(rf"(?:^|\s){re.escape(tag)}{k + 1}\s*:", rest) if k < n else None
            if nxt is None:
                answers[k - 1] = rest.strip()
                break
            answers[k - 1] = rest[:nxt.start()].strip()
            rest = rest[nxt.end():]
            k += 1
    return [a if a is not None else "" for a in answers]


# --------------------------------------------------------------------------- stop rules
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
_MC_LETTER = re.compile(r"^\s*\(?([A-D])\b(?:\)|\.(?=\s|$)|(?=\s|$))")

#: Families whose DriveLM answers are one short sentence (docs/drivelm_spec.md section 2: the YN
#: families "Yes."/"No." and the closed-set CL families, e.g. "Going ahead.", "Low.").
ONE_SENTENCE_FAMILIES: frozenset[str] = frozenset({
    # YN
    "are_there", "traffic_sign_or_barrier", "in_moving_direction", "in_object_moving_direction",
    "takes_into_account", "motion_change", "should_consider", "necessary_to_consider",
    # CL (closed sets of short phrases, some with one c-tag)
    "observed_status", "moving_status", "visual_description", "future_state", "most_relevant",
    "except_ego_most_relevant", "are_traffic_signs", "sign_meaning", "most_likely_to_consider",
    "traffic_sign_kind", "collision_probability", "most_possible_action", "traffic_signal",
    "target_action",
})


def first_sentence(text: str) -> str:
    """Text up to and including the first sentence end (``.``/``!``/``?`` then space or end).

    Periods inside numbers and c-tags (``<c1,CAM_FRONT,712.5,510.0>``) are not sentence ends.

    Args:
        text: an answer.

    Returns:
        The first complete sentence, stripped; the whole stripped text if none ends.
    """
    text = text.strip()
    m = _SENTENCE_END.search(text)
    return text[:m.end()] if m else text


def cut_at_stop_strings(text: str, stop_strings: tuple[str, ...] | list[str]) -> str:
    """Text before the earliest occurrence of any stop string (stripped); unchanged if none occurs."""
    cut = len(text)
    for stop in stop_strings:
        if not stop:
            raise ValueError("cut_at_stop_strings: empty stop string; remove it from stop_strings")
        pos = text.find(stop)
        if 0 <= pos < cut:
            cut = pos
    return text[:cut].strip()


def postprocess_answer(text: str, family: str, question: str = "",
                       one_sentence_families: frozenset[str] | set[str] | None = ONE_SENTENCE_FAMILIES,
                       stop_strings: tuple[str, ...] | list[str] = ()) -> str:
    """Trim filler from a generated answer.

    Order: cut at ``stop_strings``; then a multiple-choice question (its text carries the
    official option list) keeps only a leading option letter (``"B. Turn left."`` -> ``"B"``);
    otherwise a one-sentence family keeps its first complete sentence
    (``"Yes. The car is moving"`` -> ``"Yes."``).

    Args:
        text: decoded answer.
        family: question family (:func:`bevlm.structures.qa_families.classify_question`).
        question: the question asked ('' = not multiple choice).
        one_sentence_families: families trimmed to one sentence; None or empty = no trimming.
        stop_strings: strings that end the answer (dropped with everything after).

    Returns:
        The trimmed answer, stripped.
    """
    if stop_strings:
        text = cut_at_stop_strings(text, stop_strings)
    if MC_SUFFIX in question:
        m = _MC_LETTER.match(text)
        return m.group(1) if m else text.strip()
    if one_sentence_families and family in one_sentence_families:
        return first_sentence(text)
    return text.strip()

"""The QA a trajectory placed after the QA (``BEVVLM(traj_placement='after_qa')``) is conditioned on.

With that placement the trajectory query tokens follow the frame's *perception* and *prediction*
rounds (DriveLM's graph order perception -> prediction -> planning: Sima et al., 2024), so the
planner reads the model's answers about the scene and the other agents, and never the planning or
behavior rounds (what it would otherwise condition on is what it is asked to produce).

The same rule picks the context in both phases: in training the rounds of the sample with their
ground-truth answers (teacher forcing), at test time the same rounds with the answers the model
generated. A round is context when every question in it has one of :data:`CONTEXT_STAGES`;
``'full'`` (one question per round) and ``'three_rounds'`` (one round per stage group) keep the
stages apart, ``'single'`` mixes them and is refused.
"""
from __future__ import annotations

import dataclasses

from bevlm.structures import QAItem

from .policy import QAPolicy

#: DriveLM stages whose rounds precede the trajectory tokens.
CONTEXT_STAGES: tuple[str, ...] = ("perception", "prediction")


def check_context_policy(policy: QAPolicy) -> None:
    """Raise when ``policy`` mixes stages in one round (``'single'``), so no round is a clean context.

    Raises:
        ValueError: ``policy.mode == 'single'``.
    """
    if policy.mode == "single":
        raise ValueError("traj_placement='after_qa' conditions the trajectory on the perception and prediction "
                         "rounds; qa_policy mode 'single' puts every stage in one round. Use mode 'full' or "
                         "'three_rounds'")


def context_flags(qa_items: list[QAItem], policy: QAPolicy) -> list[bool]:
    """Which rounds of ``policy.rounds(qa_items)`` the trajectory tokens attend to.

    Args:
        qa_items: the QA of one sample.
        policy: the QA-round policy (its rounds are the training / test blocks).

    Returns:
        One flag per round, in round order: True when every question of the round is a perception
        or prediction question.
    """
    check_context_policy(policy)
    return [all(qa.stage in CONTEXT_STAGES for qa in r) for r in policy.rounds(qa_items)]


def context_blocks(qa_items: list[QAItem], policy: QAPolicy,
                   answers: dict[int, str] | None = None) -> list[tuple[str, str]]:
    """``(question text, answer text)`` of the context rounds, in round order.

    Args:
        qa_items: the QA of one sample.
        policy: the QA-round policy.
        answers: official QA index -> answer (the model's generated answers at test time); None =
            the ground-truth answers of ``qa_items`` (training). A missing index reads as ''.

    Returns:
        The blocks, formatted exactly as the training blocks of :func:`blocks_for_policy` (a
        structured round's answers re-numbered ``"A1: ...\\nA2: ..."``).
    """
    flags = context_flags(qa_items, policy)
    out = []
    for round_items, is_context in zip(policy.rounds(qa_items), flags):
        if not is_context:
            continue
        if answers is not None:
            round_items = [dataclasses.replace(qa, answer=answers.get(qa.index, "")) for qa in round_items]
        out.append((policy.question_text(round_items), policy.answer_text(round_items)))
    return out

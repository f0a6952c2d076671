"""Open questions of chosen families answered by likelihood over the family's answer set.

Some DriveLM question families are open-ended in form but answered with a handful of texts: the
collision question ("What actions taken by the ego vehicle can lead to a collision with <c1,...>?")
gets "No such action will lead to a collision.", "Back up.", "Moderate left turn.", ... A model
that decodes greedily can settle on the family's most frequent text whatever the question says,
even where its scores of the other texts still move with the question and the frame. Here each
question of a chosen family is answered with the candidate text the model finds likeliest as its
whole answer, the candidates being the family's answers in the *training* split
(:func:`closed_set_answers`: distinct texts seen at least ``min_count`` times). This is the
cloze-style scoring of :mod:`bevlm.models.qa.multiple_choice` with the options taken from the
training answers instead of the question; with ``scoring='calibrated'`` each candidate's score
is its log-probability given the frame minus its log-probability given the content-free frame
(the same question; :class:`~bevlm.models.qa.multiple_choice.OptionPrior`): what the frame adds.
With ``scoring='tag_calibrated'`` the subtracted log-probability is the same candidate's given the
same frame and the question with its c-tags replaced by a content-free object ("the object"):
what the named object (its camera and pixel) adds, the family's answer frequencies removed.

``model.test_cfg.closed_set=dict(families=["collision_actions"], scoring="likelihood")`` switches
it on; :func:`bevlm.inference.variants.apply_variant` builds the answer sets from the training QA.
A reference answer outside its family's set cannot be matched exactly: :func:`coverage` says how
much of a question set the candidates cover.
"""
from __future__ import annotations

import collections
import dataclasses

from bevlm.structures import QAItem
from bevlm.structures.qa_families import CTAG_RE, FAMILIES

from .multiple_choice import OptionPrior, score_pairs
from .policy import QAPolicy

__all__ = ["CLOSED_SET_SCORING", "check_closed_set", "closed_set_answers", "choose_closed_answers", "coverage",
           "untagged"]

CLOSED_SET_SCORING = ("likelihood", "calibrated", "tag_calibrated")
CONTENT_FREE_OBJECT = "the object"  # what replaces a question's c-tags under scoring='tag_calibrated'
_DEFAULTS = dict(families=None, scoring="likelihood", min_count=2, max_answers=32)


def check_closed_set(cfg: dict | None) -> dict | None:
    """Validate ``test_cfg.closed_set`` and fill its defaults (None stays None).

    Keys: ``families`` (non-empty list of family names of
    :data:`bevlm.structures.qa_families.FAMILIES`), ``scoring`` (``'likelihood'``,
    ``'calibrated'`` or ``'tag_calibrated'``), ``min_count`` (a training answer needs this many occurrences to be a
    candidate) and ``max_answers`` (the most frequent this many are kept).

    Raises:
        TypeError / ValueError: naming the key and the fix.
    """
    if cfg is None:
        return None
    if not isinstance(cfg, dict):
        raise TypeError(f"test_cfg.closed_set must be a dict or None, got {type(cfg).__name__}")
    unknown = sorted(set(cfg) - set(_DEFAULTS))
    if unknown:
        raise KeyError(f"test_cfg.closed_set: unknown keys {unknown}; valid keys: {sorted(_DEFAULTS)}")
    out = {**_DEFAULTS, **cfg}
    fams = out["families"]
    if isinstance(fams, str) or not fams or not all(isinstance(f, str) for f in fams):
        raise ValueError(f"test_cfg.closed_set.families={fams!r} must be a non-empty list of family names, "
                         f"e.g. ['collision_actions']")
    known = {name for names in FAMILIES.values() for name in names}
    bad = sorted(set(fams) - known)
    if bad:
        raise ValueError(f"test_cfg.closed_set.families: unknown families {bad}; known: {sorted(known)}")
    if out["scoring"] not in CLOSED_SET_SCORING:
        raise ValueError(f"test_cfg.closed_set.scoring={out['scoring']!r} must be one of {CLOSED_SET_SCORING}")
    for key in ("min_count", "max_answers"):
        v = out[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"test_cfg.closed_set.{key}={v!r} must be an integer >= 1")
    out["families"] = list(dict.fromkeys(fams))
    return out


def closed_set_answers(train_qa: list[list[QAItem]], families: list[str], min_count: int = 2,
                       max_answers: int = 32) -> dict[str, list[str]]:
    """Each family's candidate answers: its distinct training answers seen at least ``min_count``
    times, the ``max_answers`` most frequent (ties: the text that came first).

    Args:
        train_qa: one list of :class:`QAItem` per training frame.
        families: the families to collect.
        min_count: occurrences a text needs.
        max_answers: how many texts are kept per family.

    Returns:
        ``{family: [answer text, ...]}``, most frequent first.

    Raises:
        ValueError: a family with no candidate (not in the training QA, or every text rarer
            than ``min_count``), naming the fix.
    """
    counts = {f: collections.Counter() for f in families}
    for frame in train_qa or []:
        for qa in frame:
            if qa.family in counts and qa.answer:
                counts[qa.family][qa.answer.strip()] += 1
    out = {}
    for fam, c in counts.items():
        kept = [text for text, n in c.most_common() if n >= min_count][:max_answers]
        if not kept:
            raise ValueError(f"test_cfg.closed_set: the training QA has no answer of family {fam!r} seen "
                             f">= {min_count} times ({sum(c.values())} answers, {len(c)} distinct). Fix: lower "
                             f"closed_set.min_count or drop {fam!r} from closed_set.families")
        out[fam] = kept
    return out


def coverage(items: list[QAItem], candidates: dict[str, list[str]]) -> dict[str, float]:
    """Share of the items of each candidate family whose reference answer is one of the
    candidates (the exact-match ceiling of closed-set answering on those items)."""
    hit, total = collections.Counter(), collections.Counter()
    for qa in items:
        if qa.family in candidates and qa.answer:
            total[qa.family] += 1
            hit[qa.family] += qa.answer.strip() in candidates[qa.family]
    return {f: hit[f] / total[f] for f in total}


def untagged(question: str) -> str:
    """The question with every c-tag replaced by :data:`CONTENT_FREE_OBJECT`."""
    return CTAG_RE.sub(CONTENT_FREE_OBJECT, question)


def choose_closed_answers(llm, cache, items: list[QAItem], candidates: dict[str, list[str]], policy: QAPolicy,
                          prior: OptionPrior | None = None, tag_calibrated: bool = False
                          ) -> tuple[dict[int, str], dict]:
    """The likeliest candidate answer of each item, all items' candidates in one batched forward.

    Each candidate is scored as the answer of a one-question round in the policy's training
    format, as :func:`~bevlm.models.qa.multiple_choice.choose_by_likelihood` scores options.

    Args:
        llm: :class:`bevlm.models.llm.HFCausalLM` (``answer_logprobs``).
        cache: the frame's prefix cache (not mutated).
        items: the frame's items of closed-set families.
        candidates: ``{family: [text, ...]}`` (:func:`closed_set_answers`).
        policy: the model's :class:`QAPolicy`.
        prior: None (plain likelihood) or the content-free frame whose log-probability of the
            same pair is subtracted (calibrated scoring).
        tag_calibrated: subtract each candidate's log-probability on the same frame given the
            question with its c-tags replaced by a content-free object (:func:`untagged`).

    Returns:
        ``({official index: answer text}, {official index: {text: score}})``; ties go to the
        more frequent training answer (the earlier candidate).

    Raises:
        KeyError: an item whose family has no candidates.
    """
    pairs, owners = [], []
    for qa in items:
        if qa.family not in candidates:
            raise KeyError(f"choose_closed_answers: no candidate answers for family {qa.family!r} "
                           f"(QA index {qa.index}); have {sorted(candidates)}")
        for text in candidates[qa.family]:
            one = [dataclasses.replace(qa, answer=text)]
            pairs.append((policy.question_text(one), policy.answer_text(one)))
            owners.append((qa.index, text))
    if prior is not None and tag_calibrated:
        raise ValueError("choose_closed_answers: calibrate against the content-free frame (prior) or the "
                         "content-free object (tag_calibrated), not both")
    baselines = [(untagged(q), a) for q, a in pairs] if tag_calibrated else None
    scores = score_pairs(llm, cache, pairs, owners, prior=prior, baselines=baselines)
    choice = {index: max(s, key=lambda t, s=s: s[t]) for index, s in scores.items()}  # first max: frequent first
    return choice, scores

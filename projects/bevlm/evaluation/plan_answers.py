"""What a planned trajectory knows of the planning answers (mini world).

The mini world writes three of its planning answers from the ego's own future by fixed rules
(:mod:`bevlm.world.drivelm_qa`):

- behaviour ("Predict the behavior of the ego vehicle."): the steering class at 3 s and the class of
  the mean future speed (:func:`~bevlm.world.drivelm_qa.behavior_answer`);
- safe actions ("what are safe actions to take for the ego vehicle?"): the ego action (stop,
  decelerate, keep, accelerate: the speed at 3 s against the current one) and the side it steers to
  (:func:`~bevlm.world.drivelm_qa.safe_actions_answer`);
- actions based on an object: the same ego action, plus a reason that depends on the object.

The same rules applied to a *planned* trajectory (and the current speed, an input of the model) say
which answer the plan implies. :func:`plan_answer_agreement` scores that against the test file's
references: the behaviour option whose text the plan implies (the test asks behaviour as multiple
choice), the safe-actions text, and the ego action class. Applied to the recorded future's
waypoints instead of the plan, it measures how much the reading of waypoints itself loses (speeds and
headings are finite differences of 0.5-s waypoints, extrapolated half a step to the 3-s point, where
the world's rules read the simulator's own speed and heading).

This is an analysis of the mini world, not a model: it says how many of these answers a model would
get right if its answers followed its own plan, against what its LLM answered.
"""
from __future__ import annotations

import re

import numpy as np

from bevlm.structures.qa_families import question_family
from bevlm.world.drivelm_qa import (EGO_ACTIONS, behavior_answer, ego_action, facts_from_waypoints,
                                    safe_actions_answer)

_OPTION_RE = re.compile(r"([A-Z])\. (.*?)(?= [A-Z]\. |$)")


def options_of(question: str) -> dict[str, str]:
    """``{letter: text}`` of a test-format multiple-choice question ("... options: A. x B. y")."""
    tail = question.split("options:", 1)[-1].strip()
    return {m.group(1): m.group(2).strip() for m in _OPTION_RE.finditer(tail)}


def plan_answer_agreement(trajectories: dict, world_gt: dict, test: dict, answers: dict | None = None) -> dict:
    """How many of the frames' planning answers the given trajectories imply (and a run's answers get).

    Args:
        trajectories: ``{frame token: [H, 2] waypoints}`` (a run's ``per_frame.json`` planning
            ``pred_traj``, or the recorded future).
        world_gt: the world's ``world_gt.json`` (per frame: ``ego_speed``, and the true future that
            the references were written from).
        test: the ``test_eval.json`` dict (the references, as the test asks them).
        answers: optional ``{question id: answer}`` of a run (:func:`~bevlm.evaluation.drivelm_files.load_predictions`),
            scored by exact match on the same questions.

    Returns:
        ``{"totals": {family: {"questions": n, "plan": k, "answers": m or None}}, "frames": {token:
        {"scene": scene token, family: [plan right, answer right or None]}}}`` for the families
        ``behavior`` (the behaviour option whose text the plan implies equals the reference letter; a
        plan that implies none of the options counts as wrong), ``safe_actions`` (the implied text
        equals the reference) and ``ego_action`` (the ego action the plan implies equals the one of
        the frame's first actions-based-on reference; its "answers" entry is that question's exact
        match, which also needs the object's reason right). Only frames in ``trajectories`` count.
    """
    from .drivelm_testset import iter_official_ids

    families = ("behavior", "safe_actions", "ego_action")
    totals = {k: {"questions": 0, "plan": 0, "answers": 0 if answers is not None else None} for k in families}
    frames: dict = {}
    facts_of: dict = {}  # frame token -> FrameFacts read from its trajectory
    for qid, qa in iter_official_ids(test):
        scene, token = qid.split("_")[:2]
        if token not in trajectories:
            continue
        if token not in world_gt:
            raise KeyError(f"frame {token} of the test file is not in world_gt.json: is it the same world?")
        if token not in facts_of:
            facts_of[token] = facts_from_waypoints(world_gt[token]["ego_speed"], trajectories[token])
            frames[token] = {"scene": scene}
        facts, row = facts_of[token], frames[token]
        q, a = qa["Q"], qa["A"].strip()
        kind = question_family(q)
        if kind == "behavior":
            family = "behavior"
            plan_right = [k for k, v in options_of(q).items() if v == behavior_answer(facts)] == [a]
        elif kind == "safe_actions":
            family = "safe_actions"
            plan_right = safe_actions_answer(facts) == a
        elif kind == "actions_based_on" and "ego_action" not in row:
            family = "ego_action"
            said = a.split("The action is to ", 1)[-1].split(". The reason", 1)[0]
            plan_right = EGO_ACTIONS[ego_action(facts)]["act"] == said
        else:
            continue
        answer_right = None if answers is None else answers.get(qid, "").strip() == a
        row[family] = [bool(plan_right), answer_right]
        totals[family]["questions"] += 1
        totals[family]["plan"] += int(plan_right)
        if answers is not None:
            totals[family]["answers"] += int(answer_right)
    return {"totals": totals, "frames": frames}


def plan_minus_answers(frames, families=("behavior", "safe_actions"), resamples: int = 2000,
                       seed: int = 0, alpha: float = 0.05) -> dict:
    """Exact match of answers that followed the plan minus the run's answers, over the questions of
    ``families``, with a two-stage cluster bootstrap interval (scenes, then their frames:
    :func:`bevlm.evaluation.bootstrap.cluster_resample`).

    Args:
        frames: the ``"frames"`` of :func:`plan_answer_agreement` called with ``answers``, or a list
            of them (several seeds of one model on the same frames): then every resample draws the
            same scenes and frames for each, and the difference is the mean over them.

    Returns:
        ``{"questions": n, "plan": rate, "answers": rate, "diff": plan - answers, "lo", "hi"}``
        (rates and difference: means over the draws).
    """
    from .bootstrap import cluster_resample

    draws = frames if isinstance(frames, list) else [frames]
    tokens = sorted(draws[0])
    if any(sorted(d) != tokens for d in draws):
        raise ValueError("plan_minus_answers: the draws must score the same frames")
    scene_ids = {s: i for i, s in enumerate(sorted({draws[0][t]["scene"] for t in tokens}))}
    weights = cluster_resample(np.array([scene_ids[draws[0][t]["scene"]] for t in tokens]), resamples, seed)
    plan_rates, ans_rates, diffs = [], [], []
    for d in draws:
        if any(d[t][f][1] is None for t in tokens for f in families if f in d[t]):
            raise ValueError("plan_minus_answers needs frames scored with answers (plan_answer_agreement(..., answers))")
        plan = np.array([sum(d[t][f][0] for f in families if f in d[t]) for t in tokens], float)
        ans = np.array([sum(bool(d[t][f][1]) for f in families if f in d[t]) for t in tokens], float)
        count = np.array([sum(f in d[t] for f in families) for t in tokens], float)
        if count.sum() == 0:
            raise ValueError(f"plan_minus_answers: no questions of {families} in the frames")
        plan_rates.append(plan.sum() / count.sum())
        ans_rates.append(ans.sum() / count.sum())
        diffs.append((weights @ (plan - ans)) / (weights @ count))
    mean_diffs = np.mean(diffs, axis=0)
    lo, hi = np.quantile(mean_diffs, [alpha / 2, 1 - alpha / 2])
    return {"questions": int(count.sum()), "plan": float(np.mean(plan_rates)), "answers": float(np.mean(ans_rates)),
            "diff": float(np.mean(plan_rates) - np.mean(ans_rates)), "lo": float(lo), "hi": float(hi)}

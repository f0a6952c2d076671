"""The trajectory head's own plan, written as one line of LLM input before the questions.

The trajectory head plans from the prefix in one forward pass (L2 about 0.35 m), but the LLM, asked
how the ego will behave and which actions are safe, answers as if it had not seen that plan: read by
the rules the answers are written with, the plans imply the right behaviour option on 60-65 % of the
val frames and the right safe actions on 62-69 %, the LLM's answers 40-58 % and 15-27 %
(docs/results/plan_answers/). :class:`PlanText` closes the loop: after the head has planned, the plan
is described in the answers' own words and appended to the prefix, so every question, the planning
ones in particular, is answered with the plan in view::

    Plan: The ego vehicle is going straight. The ego vehicle is driving slowly. Safe actions: Keep going
    at the same speed, decelerate gradually without braking.

The words are DriveLM's behaviour and safe-action phrasings (steering class at 3 s, class of the mean
future speed, the ego action from the speed at 3 s against the current one), applied to the planned
waypoints by :func:`bevlm.world.drivelm_qa.facts_from_waypoints` and the world's answer rules (whose
phrasings copy DriveLM v1.1's). Only the model's own plan and current speed enter the line, never the
recorded future: in training the line is written from the head's plan of the same step, computed in a
first pass without gradient (the trajectory queries precede the line, so that pass gives the same
plan the training forward's queries would), at test time from the plan the head has just made. The
LLM still has to learn to use the line; a wrong plan writes a wrong line.

The line is tokenised and padded to a fixed number of tokens, so every frame's prefix has the same
length (:func:`~bevlm.models.heads.ego_text.fixed_length_ids`).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from bevlm.world.drivelm_qa import behavior_answer, facts_from_waypoints, safe_actions_answer

from ..llm.generation import lm_device
from .ego_text import fixed_length_ids


class PlanText:
    """Writes a planned trajectory as one fixed-length line of LLM input (see the module doc).

    Args:
        num_tokens: tokens of the line (padded with ``pad_text`` tokens; a line that does not fit is
            refused, naming the fix).
        pad_text: the text whose tokens pad the line.
        step_s: time between the plan's waypoints (s); the first is ``step_s`` after now.
        safe_actions: also write the safe actions the plan implies (else the behaviour only).
    """

    def __init__(self, num_tokens: int = 48, pad_text: str = "\n", step_s: float = 0.5,
                 safe_actions: bool = True) -> None:
        if num_tokens < 8:
            raise ValueError(f"plan_text.num_tokens must be >= 8, got {num_tokens}")
        if step_s <= 0:
            raise ValueError(f"plan_text.step_s must be > 0, got {step_s}")
        self.num_tokens, self.pad_text = int(num_tokens), pad_text
        self.step_s, self.safe_actions = float(step_s), bool(safe_actions)

    @staticmethod
    def speed_of(ego_status: Tensor) -> float:
        """Current speed (m/s) of an ``ego_status`` ``[vx, vy, ...]``."""
        vx, vy = (float(v) for v in ego_status[:2])
        return math.hypot(vx, vy)

    def describe(self, ego_speed: float, waypoints) -> str:
        """The line for a plan: ``[H, 2]`` waypoints (x forward, y left, metres; H >= 2) at the
        current speed ``ego_speed`` (m/s)."""
        wp = torch.as_tensor(waypoints).detach().double().cpu().numpy()
        facts = facts_from_waypoints(ego_speed, wp, self.step_s)
        line = f"Plan: {behavior_answer(facts)}"
        if self.safe_actions:
            line += f" Safe actions: {safe_actions_answer(facts)}"
        return line

    def token_ids(self, text: str, tokenizer) -> list[int]:
        """Exactly ``num_tokens`` token ids: the line, then padding."""
        return fixed_length_ids(text, tokenizer, self.num_tokens, self.pad_text, "model.plan_text")

    def lines(self, data_samples: list, plans: Tensor) -> list[str]:
        """One line per sample from ``plans [B, H, 2]``; each is also stored as ``sample.plan_text``."""
        if plans.dim() != 3 or plans.shape[0] != len(data_samples) or plans.shape[-1] != 2:
            raise ValueError(f"PlanText: plans must be [B={len(data_samples)}, H, 2], got {tuple(plans.shape)}")
        out = []
        for s, plan in zip(data_samples, plans):
            s.plan_text = self.describe(self.speed_of(s.ego_status), plan)
            out.append(s.plan_text)
        return out

    def ids(self, data_samples: list, plans: Tensor, tokenizer) -> list[list[int]]:
        """``B`` lists of ``num_tokens`` ids, the lines of :meth:`lines`."""
        return [self.token_ids(line, tokenizer) for line in self.lines(data_samples, plans)]

    def embed(self, data_samples: list, plans: Tensor, llm) -> Tensor:
        """``[B, num_tokens, D]`` input embeddings of the samples' lines (no gradient)."""
        ids = self.ids(data_samples, plans, llm.tokenizer)
        with torch.no_grad():
            return llm.embed_tokens(torch.tensor(ids, dtype=torch.long, device=lm_device(llm.lm)))

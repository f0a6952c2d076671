"""The ego status as text in the LLM prefix.

The default model gives the LLM the ego status (``[vx, vy, ax, ay, yaw_rate]``) as one learned token
(``BEVVLM.ego_embed``). After a short training the LLM reads little from it: the behaviour question
(how fast the ego will drive and which way it will steer, a function of its motion) is answered
near chance although the trajectory head, reading the same status, plans within 0.35 m.
:class:`EgoText` writes the status, and what it implies over the planning horizon when extrapolated
at constant turn rate and acceleration (:func:`bevlm.structures.kinematics.kinematic_waypoints`),
as one line of text the LLM embeds with its own input embeddings, e.g.::

    Ego: 8.2 m/s, speeding up 0.3 m/s2, turning left 1.5 deg/s. In 3 s at this rate: 26 m, 5 deg left.

Only the ego status enters the line (no future, no label): the LLM still has to learn what the
numbers mean for its answers. Numbers are whole or one-decimal (the official match metric reads
decimal numbers of the *answers* as pixel coordinates; the line itself is never scored). The line
is tokenised and padded to a fixed number of tokens, so every frame's prefix has the same length.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from bevlm.structures.kinematics import kinematic_waypoints


def fixed_length_ids(text: str, tokenizer, num_tokens: int, pad_text: str, key: str) -> list[int]:
    """Exactly ``num_tokens`` token ids: ``text``'s, then ``pad_text``'s repeated (cut to length).

    Args:
        key: the config key of the line's settings, named in the errors (e.g. ``'model.ego_text'``).

    Raises:
        ValueError: ``pad_text`` tokenises to nothing, or ``text`` is longer than ``num_tokens``.
    """
    pad = tokenizer(pad_text, add_special_tokens=False)["input_ids"]
    if not pad:
        raise ValueError(f"{key}.pad_text={pad_text!r} tokenises to nothing; choose another")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) > num_tokens:
        raise ValueError(f"{key.split('.')[-1]}: the line {text!r} is {len(ids)} tokens, more than num_tokens="
                         f"{num_tokens}. Fix: raise {key}.num_tokens")
    reps = -(-(num_tokens - len(ids)) // len(pad))
    return (ids + pad * reps)[:num_tokens]


class EgoText:
    """Writes a frame's ego status as one fixed-length line of LLM input (see the module doc).

    Args:
        horizon_s: the extrapolation horizon of the line's second sentence (s; a multiple of 0.5).
        num_tokens: tokens of the line (padded with ``pad_text`` tokens; a line that does not fit
            is refused, naming the fix).
        pad_text: the text whose tokens pad the line.
    """

    DT = 0.5  # waypoint spacing of the extrapolation (s)

    def __init__(self, horizon_s: float = 3.0, num_tokens: int = 64, pad_text: str = "\n") -> None:
        steps = horizon_s / self.DT
        if horizon_s <= 0 or abs(steps - round(steps)) > 1e-9:
            raise ValueError(f"ego_text.horizon_s must be a positive multiple of {self.DT} s, got {horizon_s}")
        if num_tokens < 8:
            raise ValueError(f"ego_text.num_tokens must be >= 8, got {num_tokens}")
        self.horizon_s, self.steps = float(horizon_s), int(round(steps))
        self.num_tokens, self.pad_text = int(num_tokens), pad_text

    def quantities(self, ego_status: Tensor) -> dict:
        """``{speed, accel, yaw_rate_deg, dist, heading_deg}`` of one ``ego_status [>=5]``: speed (m/s),
        acceleration along the motion (m/s^2, negative when slowing), yaw rate (deg/s, positive to the
        left), and over ``horizon_s`` at constant turn rate and acceleration the distance travelled
        along the path (m, the speed stops at 0) and the heading change (deg, positive to the left)."""
        e = ego_status.detach().double().cpu()
        vx, vy, ax, ay, yaw_rate = (float(v) for v in e[:5])
        speed = math.hypot(vx, vy)
        accel = (ax * vx + ay * vy) / speed if speed > 1e-6 else ax
        pts = kinematic_waypoints(e[:5], steps=self.steps, dt=self.DT, mode="ctra")  # [steps, 2]
        path = torch.cat([pts.new_zeros(1, 2), pts], 0)
        dist = float((path[1:] - path[:-1]).norm(dim=-1).sum())
        return {"speed": speed, "accel": accel, "yaw_rate_deg": math.degrees(yaw_rate), "dist": dist,
                "heading_deg": math.degrees(yaw_rate * self.horizon_s)}

    def describe(self, q: dict) -> str:
        """The line for :meth:`quantities`."""
        accel = f"{abs(q['accel']):.1f}"
        change = ("steady speed" if accel == "0.0" else
                  f"{'speeding up' if q['accel'] > 0 else 'slowing down'} {accel} m/s2")
        rate = f"{abs(q['yaw_rate_deg']):.1f}"
        turn = ("not turning" if rate == "0.0" else
                f"turning {'left' if q['yaw_rate_deg'] > 0 else 'right'} {rate} deg/s")
        heading = f"{abs(q['heading_deg']):.0f}"
        side = "" if heading == "0" else (" left" if q["heading_deg"] > 0 else " right")
        return (f"Ego: {q['speed']:.1f} m/s, {change}, {turn}. "
                f"In {self.horizon_s:g} s at this rate: {q['dist']:.0f} m, {heading} deg{side}.")

    def token_ids(self, text: str, tokenizer) -> list[int]:
        """Exactly ``num_tokens`` token ids: the line, then padding."""
        return fixed_length_ids(text, tokenizer, self.num_tokens, self.pad_text, "model.ego_text")

    def embed(self, data_samples: list, llm) -> Tensor:
        """``[B, num_tokens, D]`` input embeddings of the samples' lines (no gradient); each line is also
        stored as ``sample.ego_text``."""
        ids = []
        for s in data_samples:
            s.ego_text = self.describe(self.quantities(s.ego_status))
            ids.append(self.token_ids(s.ego_text, llm.tokenizer))
        table = llm.lm.get_input_embeddings()
        with torch.no_grad():
            return table(torch.tensor(ids, dtype=torch.long, device=table.weight.device))

"""Trajectory tokens: learned queries read out by an MLP into ego waypoints.

K learned query embeddings are appended at the END of the LLM prefix (after
the visual / ego tokens, before any question), so under the causal mask they
attend to the whole scene and to nothing question-specific; their last-layer
hidden states are flattened and an MLP regresses per-step offsets whose
cumulative sum is the planned trajectory. The readout of LLM states into
waypoints through an MLP follows the "planning token" heads of e.g. OmniDrive
(Wang et al., 2024) and the ego-query planner of VAD (Jiang et al., 2023).

Optionally (``ego_prior_dims > 0``) a second MLP maps the ego status (speed, acceleration, yaw
rate, ...) straight to per-step offsets that are added to the LLM readout's: the kinematic
extrapolation that open-loop planning on nuScenes mostly rewards (Li et al., "Is Ego Status All You
Need for Open-Loop End-to-End Autonomous Driving?", 2024) no longer has to pass through the LLM,
whose states at the query tokens then only carry the scene-dependent correction.

With ``kinematic_prior`` ('ctra' or 'constant_velocity') the waypoints are the ego status
extrapolated by that kinematic model (:func:`bevlm.structures.kinematic_waypoints`, no parameters)
plus the learned offsets: the head starts from the non-learned reference planner and learns only
where the scene departs from it (turn onsets, braking for agents). ``zero_init_offsets`` starts the
learned offsets at exactly zero (the last layer of each offset path zero-initialised, as residual
branches often are), so an untrained head predicts the kinematic prior itself rather than the prior
plus random offsets.

With ``num_commands = C > 0`` the head plans once per driving command (turn left / turn right / go
straight, :data:`bevlm.structures.COMMANDS`) and returns the plan of each frame's command, as VAD's
planner does: both offset paths output ``C`` sets of offsets and :meth:`forward` picks one by
``command [B]``. Only the chosen plan gets a gradient. The command reaches the trajectory and
nothing else (not the LLM's prefix), so the QA answers cannot read it.

With ``command_input=True`` (and ``num_commands = C``) the head makes one plan instead, and the
command is an input: its one-hot joins the ego status on the direct ego-status path, as the
``ego_mlp_cmd`` reference planner (:mod:`bevlm.evaluation.planning_baselines`) takes it. Every
frame then trains the same weights, where the per-command plans train each command's outputs only on
that command's frames (a rare command, such as the mini world's 16 turn-right training frames, gets
few updates).

With ``fitted_prior_hidden = W > 0`` the plan starts from a *fitted* ego-status planner instead of
CTRA alone: a frozen MLP (two hidden layers of width ``W``) from the ego status (and, with
``num_commands``, the command one-hot) to offsets over CTRA, fitted on the training split's ego
states and recorded futures before training starts (:class:`bevlm.engine.EgoPriorFitHook`, the
``ego_mlp`` / ``ego_mlp_cmd`` reference planner of :mod:`bevlm.evaluation.planning_baselines`, the
AD-MLP idea) and kept in the checkpoint. With ``zero_init_offsets`` the untrained head plans what
that planner plans, and the learned offsets (readout and direct path) only add what it misses.
"""
from __future__ import annotations

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

from bevlm.registry import MODELS
from bevlm.structures import KINEMATIC_MODES, kinematic_waypoints


@MODELS.register_module()
class TrajectoryTokenHead(BaseModule):
    """Learned trajectory query tokens and an MLP readout to waypoints.

    Args:
        hidden_size: width D of the LLM (query embeddings and hidden states).
        num_tokens: number K of trajectory query tokens.
        horizon: number H of future waypoints (0.5 s apart in DriveLM/nuScenes).
        hidden_dims: width of the MLP.
        loss_weight: multiplier of ``loss_traj``.
        ego_prior_dims: length E of the ego-status vector of the direct ego-status path (0: none);
            with it, :meth:`forward` needs ``ego_status [B, E]``.
        kinematic_prior: None, or a mode of :func:`bevlm.structures.kinematic_waypoints` ('ctra',
            'constant_velocity'): the waypoints are that extrapolation of the ego status
            (``[vx, vy, ax, ay, yaw_rate, ...]``) plus the learned offsets; :meth:`forward` then
            needs ``ego_status``.
        step_s: seconds between waypoints (the kinematic prior's time step).
        zero_init_offsets: zero-initialise the last layer of the readout MLP and of the ego path,
            so the untrained head's offsets are exactly zero (with a kinematic prior: it starts
            as that reference planner).
        num_commands: 0 (no command), or the number C of driving commands: one plan per command,
            :meth:`forward` then needs ``command [B]`` (indices in ``[0, C)``).
        command_input: with ``num_commands``, one plan whose direct ego-status path also reads the
            command one-hot (needs ``ego_prior_dims > 0``), instead of one plan per command.
        fitted_prior_hidden: 0 (none), or the width W of the frozen fitted ego-status planner added to
            the CTRA prior (needs ``kinematic_prior='ctra'``); it must be fitted before the head
            plans (:meth:`load_fitted_prior`, done by :class:`bevlm.engine.EgoPriorFitHook`).
        init_cfg: mmengine init config (optional).
    """

    def __init__(self, hidden_size: int, num_tokens: int = 6, horizon: int = 6, hidden_dims: int = 256,
                 loss_weight: float = 1.0, ego_prior_dims: int = 0, kinematic_prior: str | None = None,
                 step_s: float = 0.5, zero_init_offsets: bool = False, num_commands: int = 0,
                 command_input: bool = False, fitted_prior_hidden: int = 0, init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if kinematic_prior is not None and kinematic_prior not in KINEMATIC_MODES:
            raise ValueError(f"TrajectoryTokenHead: kinematic_prior={kinematic_prior!r} is not None or one of "
                             f"{KINEMATIC_MODES}")
        self.kinematic_prior = kinematic_prior
        self.step_s = float(step_s)
        if hidden_size <= 0 or num_tokens <= 0 or horizon <= 0 or hidden_dims <= 0 or ego_prior_dims < 0 \
                or num_commands < 0:
            raise ValueError(f"TrajectoryTokenHead: hidden_size={hidden_size}, num_tokens={num_tokens}, "
                             f"horizon={horizon}, hidden_dims={hidden_dims} must all be positive and "
                             f"ego_prior_dims={ego_prior_dims}, num_commands={num_commands} >= 0")
        self.num_commands = int(num_commands)
        self.command_input = bool(command_input)
        if self.command_input and (self.num_commands == 0 or ego_prior_dims == 0):
            raise ValueError(f"TrajectoryTokenHead: command_input=True feeds the command one-hot to the direct "
                             f"ego-status path; it needs num_commands > 0 and ego_prior_dims > 0, got "
                             f"num_commands={num_commands}, ego_prior_dims={ego_prior_dims}")
        # plans per frame: one per command, or one that reads the command
        modes = 1 if self.command_input else max(self.num_commands, 1)
        self.hidden_size = hidden_size
        self.num_tokens = num_tokens
        self.horizon = horizon
        self.loss_weight = loss_weight
        # Same scale as a transformer's token embeddings (std 0.02).
        self.queries = nn.Parameter(torch.randn(num_tokens, hidden_size) * 0.02)  # [K, D]
        self.mlp = nn.Sequential(
            nn.LayerNorm(num_tokens * hidden_size),
            nn.Linear(num_tokens * hidden_size, hidden_dims),
            nn.GELU(),
            nn.Linear(hidden_dims, hidden_dims),
            nn.GELU(),
            nn.Linear(hidden_dims, modes * horizon * 2),
        )
        self.ego_prior_dims = ego_prior_dims
        # ego status -> per-step offsets, added to the readout's (None: the LLM path alone)
        self.ego_prior = nn.Sequential(
            nn.Linear(ego_prior_dims + (self.num_commands if self.command_input else 0), hidden_dims),
            nn.GELU(),
            nn.Linear(hidden_dims, modes * horizon * 2),
        ) if ego_prior_dims else None
        self.fitted_prior_hidden = int(fitted_prior_hidden)
        if self.fitted_prior_hidden < 0 or (self.fitted_prior_hidden and kinematic_prior != "ctra"):
            raise ValueError(f"TrajectoryTokenHead: fitted_prior_hidden={fitted_prior_hidden} must be >= 0, and a "
                             f"fitted prior is fitted over the CTRA extrapolation: it needs kinematic_prior='ctra', "
                             f"got {kinematic_prior!r}")
        # the fitted ego-status planner: [vx, vy, ax, ay, yaw_rate] (+ command one-hot) -> offsets over CTRA,
        # frozen; fitted_prior_ready says load_fitted_prior has set it (saved with the checkpoint)
        self.fitted_prior = None
        if self.fitted_prior_hidden:
            width = self.fitted_prior_hidden
            self.fitted_prior = nn.Sequential(nn.Linear(5 + self.num_commands, width), nn.GELU(), nn.Linear(width, width),
                                              nn.GELU(), nn.Linear(width, horizon * 2)).requires_grad_(False)
            self.register_buffer("fitted_prior_ready", torch.zeros((), dtype=torch.bool))
        self.zero_init_offsets = bool(zero_init_offsets)
        if self.zero_init_offsets:
            for path in (self.mlp, self.ego_prior):
                if path is not None:
                    nn.init.zeros_(path[-1].weight)
                    nn.init.zeros_(path[-1].bias)

    @torch.no_grad()
    def load_fitted_prior(self, net: nn.Sequential, mean, std) -> None:
        """Set the fitted prior to ``net``, an MLP of its shape fitted on normalised inputs
        ``(x - mean) / std`` (x: the 5 ego values, then the command one-hot; output: ``[H * 2]``
        offsets over CTRA), e.g. the ``net`` of :func:`~bevlm.evaluation.planning_baselines.fit_ego_mlp`.

        The normalisation is folded into the first layer (``W / std``, ``b - W mean / std``), so the
        prior reads the raw ego status and computes what ``net`` computes on the normalised inputs.

        Raises:
            ValueError: the head has no fitted prior, or ``net``'s parameters differ from its shapes.
        """
        if self.fitted_prior is None:
            raise ValueError("TrajectoryTokenHead.load_fitted_prior: the head has no fitted prior "
                             "(traj_head.fitted_prior_hidden=0)")
        want = [tuple(p.shape) for p in self.fitted_prior.parameters()]
        got = [tuple(p.shape) for p in net.parameters()]
        if got != want:
            raise ValueError(f"TrajectoryTokenHead.load_fitted_prior: the network's parameters {got} are not the "
                             f"fitted prior's {want}")
        self.fitted_prior.load_state_dict(net.state_dict())
        first = self.fitted_prior[0]
        mean = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float64).reshape(-1)
        w, b = net[0].weight.double(), net[0].bias.double()
        first.weight.copy_((w / std).to(first.weight.dtype))
        first.bias.copy_((b - (w * (mean / std)).sum(1)).to(first.bias.dtype))
        self.fitted_prior_ready.fill_(True)

    def query_embeds(self, batch_size: int) -> Tensor:
        """The query tokens for a batch.

        Args:
            batch_size: B.

        Returns:
            ``[B, K, D]`` (a broadcast view; the caller concatenates it).
        """
        return self.queries.unsqueeze(0).expand(batch_size, -1, -1)  # [B, K, D]

    def forward(self, hidden: Tensor, ego_status: Tensor | None = None, command: Tensor | None = None) -> Tensor:
        """Waypoints from the hidden states of the K query tokens (and the ego status).

        Args:
            hidden: ``[B, K, D]`` last-layer LLM states at the query positions.
            ego_status: ``[B, E]`` ego state, needed with ``ego_prior_dims = E`` or a kinematic prior
                (ignored without either).
            command: ``[B]`` driving-command indices, needed with ``num_commands > 0`` (ignored
                without).

        Returns:
            ``[B, H, 2]`` waypoints (x forward, y left, metres) in the current
            ego frame: cumulative sums of the predicted per-step offsets.
        """
        if hidden.dim() != 3 or hidden.shape[1:] != (self.num_tokens, self.hidden_size):
            raise ValueError(f"TrajectoryTokenHead: hidden must be [B, {self.num_tokens}, {self.hidden_size}], "
                             f"got {tuple(hidden.shape)}")
        batch = hidden.shape[0]
        if self.num_commands:
            if command is None or command.shape != (batch,) or command.dtype.is_floating_point \
                    or bool(((command < 0) | (command >= self.num_commands)).any()):
                raise ValueError(f"TrajectoryTokenHead(num_commands={self.num_commands}) needs command [{batch}] "
                                 f"of integer indices in [0, {self.num_commands}), got "
                                 f"{None if command is None else (tuple(command.shape), command.dtype)}. Fix: "
                                 "the data samples need ego_command (PackDriveInputs sets it)")
        flat = hidden.flatten(1).to(self.queries.dtype)  # [B, K*D]
        offsets = self.mlp(flat)  # [B, C*H*2]
        if self.ego_prior is not None:
            if ego_status is None or ego_status.shape != (batch, self.ego_prior_dims):
                raise ValueError(f"TrajectoryTokenHead(ego_prior_dims={self.ego_prior_dims}) needs ego_status "
                                 f"[{batch}, {self.ego_prior_dims}], got "
                                 f"{None if ego_status is None else tuple(ego_status.shape)}")
            ego_in = ego_status.to(self.queries.dtype)
            if self.command_input:  # [B, E + C]: the ego status and the command one-hot
                onehot = nn.functional.one_hot(command.to(ego_in.device).long(), self.num_commands)
                ego_in = torch.cat([ego_in, onehot.to(ego_in.dtype)], dim=-1)
            offsets = offsets + self.ego_prior(ego_in)
        offsets = offsets.view(batch, -1, self.horizon, 2)  # [B, C or 1, H, 2]
        if self.num_commands and not self.command_input:
            offsets = offsets[torch.arange(batch, device=offsets.device), command.to(offsets.device)]
        else:
            offsets = offsets[:, 0]  # [B, H, 2]
        traj = offsets.cumsum(dim=1)
        if self.kinematic_prior is not None:
            if ego_status is None or ego_status.dim() != 2 or ego_status.shape[0] != hidden.shape[0] \
                    or ego_status.shape[1] < 5:
                raise ValueError(f"TrajectoryTokenHead(kinematic_prior={self.kinematic_prior!r}) needs ego_status "
                                 f"[{hidden.shape[0]}, >=5] ([vx, vy, ax, ay, yaw_rate, ...]), got "
                                 f"{None if ego_status is None else tuple(ego_status.shape)}")
            base = kinematic_waypoints(ego_status.detach().double(), self.horizon, self.step_s, self.kinematic_prior)
            traj = traj + base.to(traj.dtype)
        if self.fitted_prior is not None:
            if not bool(self.fitted_prior_ready):
                raise ValueError("TrajectoryTokenHead(fitted_prior_hidden > 0): the fitted prior has not been fitted. "
                                 "Fix: train with custom_hooks=[dict(type='EgoPriorFitHook')] (it fits the prior on "
                                 "the training frames before the first iteration), or load a checkpoint trained so")
            prior_in = ego_status[:, :5].detach().to(traj.dtype)
            if self.num_commands:
                onehot = nn.functional.one_hot(command.to(prior_in.device).long(), self.num_commands)
                prior_in = torch.cat([prior_in, onehot.to(prior_in.dtype)], dim=-1)
            traj = traj + self.fitted_prior(prior_in).view(batch, self.horizon, 2)
        return traj

    @property
    def needs_ego_status(self) -> bool:
        """Whether :meth:`forward` reads the ego status (direct path or kinematic prior)."""
        return self.ego_prior is not None or self.kinematic_prior is not None

    def loss(self, pred: Tensor, gt: Tensor, mask: Tensor | None = None) -> dict:
        """Masked L1 between predicted and ground-truth waypoints.

        Args:
            pred: ``[B, H, 2]`` predicted waypoints.
            gt: ``[B, H, 2]`` ground-truth waypoints.
            mask: ``[B, H]`` bool, True where the ground truth is valid
                (None: all valid).

        Returns:
            dict ``loss_traj``: mean absolute error over valid coordinates,
            times ``loss_weight`` (0 when nothing is valid, still in the graph).
        """
        if pred.shape != gt.shape:
            raise ValueError(f"TrajectoryTokenHead.loss: pred {tuple(pred.shape)} != gt {tuple(gt.shape)}")
        if mask is None:
            mask = torch.ones(gt.shape[:2], dtype=torch.bool, device=gt.device)
        weight = mask.to(pred.dtype).unsqueeze(-1)  # [B, H, 1]
        gt = torch.where(weight > 0, gt.to(pred.dtype), pred.detach())  # NaN-safe at masked steps
        err = (pred - gt).abs() * weight  # [B, H, 2]
        denom = (weight.sum() * 2).clamp(min=1.0)
        return dict(loss_traj=self.loss_weight * err.sum() / denom)

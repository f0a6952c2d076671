"""Trajectory token head: shapes, cumulative waypoints, masked L1, learning."""
import pytest
import torch

from bevlm.models.heads.traj_head import TrajectoryTokenHead
from bevlm.registry import MODELS

torch.set_num_threads(1)

D, K, H = 32, 3, 6


def _head(**kwargs) -> TrajectoryTokenHead:
    torch.manual_seed(0)
    return TrajectoryTokenHead(hidden_size=D, num_tokens=K, horizon=H, hidden_dims=64, **kwargs)


def test_shapes_and_registry():
    head = _head()
    assert head.query_embeds(4).shape == (4, K, D)
    assert torch.equal(head.query_embeds(2)[1], head.queries)
    pred = head(torch.randn(4, K, D))
    assert pred.shape == (4, H, 2)
    built = MODELS.build(dict(type="TrajectoryTokenHead", hidden_size=D, num_tokens=K, horizon=H))
    assert isinstance(built, TrajectoryTokenHead)
    with pytest.raises(ValueError, match=r"\[B, 3, 32\]"):
        head(torch.randn(4, K + 1, D))


def test_waypoints_are_cumulative_offsets():
    head = _head()
    hidden = torch.randn(2, K, D)
    offsets = head.mlp(hidden.flatten(1)).view(2, H, 2)
    pred = head(hidden)
    torch.testing.assert_close(pred[:, 0], offsets[:, 0])
    torch.testing.assert_close(pred[:, 1:] - pred[:, :-1], offsets[:, 1:], atol=1e-5, rtol=0)


def test_masked_loss_ignores_masked_steps():
    head = _head(loss_weight=2.0)
    pred = torch.zeros(2, H, 2)
    gt = torch.ones(2, H, 2)
    mask = torch.ones(2, H, dtype=torch.bool)
    mask[1, 3:] = False
    base = head.loss(pred, gt, mask)["loss_traj"]
    torch.testing.assert_close(base, torch.tensor(2.0))  # |0 - 1| averaged, times loss_weight
    gt_bad = gt.clone()
    gt_bad[1, 3:] = float("nan")  # masked steps may hold anything, even NaN
    torch.testing.assert_close(head.loss(pred, gt_bad, mask)["loss_traj"], base)
    gt_far = gt.clone()
    gt_far[1, 3:] = 1e3
    torch.testing.assert_close(head.loss(pred, gt_far, mask)["loss_traj"], base)
    gt_far[0, 0] = 1e3  # a valid step does count
    assert head.loss(pred, gt_far, mask)["loss_traj"] > base
    none_valid = head.loss(pred.requires_grad_(), gt, torch.zeros(2, H, dtype=torch.bool))["loss_traj"]
    assert none_valid.item() == 0.0 and none_valid.requires_grad
    torch.testing.assert_close(head.loss(pred, gt)["loss_traj"], torch.tensor(2.0))  # mask None: all valid


def test_optimisation_reduces_loss():
    head = _head()
    torch.manual_seed(1)
    hidden = torch.randn(8, K, D)
    t = torch.arange(1, H + 1, dtype=torch.float32) * 0.5
    speed = torch.rand(8, 1) * 10
    gt = torch.stack([speed * t, 0.1 * speed * t ** 2], dim=-1)  # [8, H, 2] forward + drift left
    mask = torch.rand(8, H) > 0.2
    optim = torch.optim.Adam(head.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = head.loss(head(hidden), gt, mask)["loss_traj"]
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_ego_prior_adds_its_offsets_and_learns():
    head = _head(ego_prior_dims=5)
    hidden, ego = torch.randn(3, K, D), torch.randn(3, 5)
    pred = head(hidden, ego)
    offsets = head.mlp(hidden.flatten(1)).view(3, H, 2) + head.ego_prior(ego).view(3, H, 2)
    torch.testing.assert_close(pred, offsets.cumsum(dim=1))
    with pytest.raises(ValueError, match=r"needs ego_status \[3, 5\], got None"):
        head(hidden)
    with pytest.raises(ValueError, match=r"got \(3, 4\)"):
        head(hidden, torch.randn(3, 4))
    assert _head().ego_prior is None and _head()(hidden, ego).shape == (3, H, 2)  # ignored without
    # the ego path alone can fit a trajectory that is a function of the ego state (speed)
    torch.manual_seed(1)
    speed = torch.rand(16, 1) * 10
    ego = torch.cat([speed, torch.zeros(16, 4)], dim=1)
    t = torch.arange(1, H + 1, dtype=torch.float32) * 0.5
    gt = torch.stack([speed * t, torch.zeros(16, H)], dim=-1)
    hidden = torch.zeros(16, K, D)  # the LLM states carry nothing
    optim = torch.optim.Adam(head.parameters(), lr=1e-2)
    first = None
    for _ in range(200):
        loss = head.loss(head(hidden, ego), gt)["loss_traj"]
        first = loss.item() if first is None else first
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert loss.item() < 0.1 * first


def test_kinematic_prior_is_the_base_the_learned_offsets_add_to():
    from bevlm.structures import kinematic_waypoints

    head = _head(kinematic_prior="ctra")
    hidden = torch.randn(3, K, D)
    ego = torch.tensor([[5.0, 0.0, 0.5, 0.0, 0.2], [0.0, 0.0, 0.0, 0.0, 0.0], [3.0, 0.3, -1.0, 0.0, -0.1]])
    base = kinematic_waypoints(ego.double(), H, 0.5, "ctra").float()
    plain = _head()(hidden)  # the same weights (seed) without the prior: the learned part alone
    torch.testing.assert_close(head(hidden, ego), plain + base)
    with torch.no_grad():  # learned offsets at zero: exactly the kinematic extrapolation
        head.mlp[-1].weight.zero_()
        head.mlp[-1].bias.zero_()
    torch.testing.assert_close(head(hidden, ego), base)
    # the ego status is data: no gradient to it, gradients to the head
    ego.requires_grad_(True)
    head.loss(head(hidden, ego), torch.zeros(3, H, 2))["loss_traj"].backward()
    assert ego.grad is None and head.mlp[-1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs ego_status"):
        head(hidden)
    with pytest.raises(ValueError, match="kinematic_prior"):
        _head(kinematic_prior="bicycle")


def test_kinematic_prior_needs_the_ego_status_in_the_model():
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from tests.conftest import REPO

    init_default_scope("bevlm")
    cfg = Config.fromfile(f"{REPO}/configs/bev_vlm_tiny.py").model.to_dict()
    cfg["traj_head"] = dict(cfg["traj_head"], kinematic_prior="ctra", ego_prior_dims=0)
    cfg["use_ego_status"] = False
    with pytest.raises(ValueError, match="kinematic_prior='ctra' extrapolates the ego status"):
        MODELS.build(cfg)


def test_zero_init_offsets_start_at_the_kinematic_prior_and_learn():
    from bevlm.structures import kinematic_waypoints

    head = _head(kinematic_prior="ctra", ego_prior_dims=5, zero_init_offsets=True)
    hidden = torch.randn(2, K, D)
    ego = torch.tensor([[5.0, 0.0, 0.5, 0.0, 0.2], [3.0, 0.3, -1.0, 0.0, -0.1]])
    base = kinematic_waypoints(ego.double(), H, 0.5, "ctra").float()
    assert torch.equal(head(hidden, ego), base)  # exactly the reference planner before training
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    gt = base + 0.5
    first = head.loss(head(hidden, ego), gt)["loss_traj"]
    for _ in range(20):
        opt.zero_grad()
        head.loss(head(hidden, ego), gt)["loss_traj"].backward()
        opt.step()
    assert head.loss(head(hidden, ego), gt)["loss_traj"] < 0.5 * first  # the zero layers do not stall learning


def test_zero_init_offsets_survive_the_model_build():
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from tests.conftest import REPO

    init_default_scope("bevlm")
    cfg = Config.fromfile(f"{REPO}/configs/bev_vlm_tiny.py").model.to_dict()
    cfg["traj_head"] = dict(cfg["traj_head"], kinematic_prior="ctra", zero_init_offsets=True)
    model = MODELS.build(cfg)
    model.init_weights()
    assert model.traj_head.mlp[-1].weight.abs().sum() == 0 and model.traj_head.mlp[-1].bias.abs().sum() == 0


def test_one_plan_per_driving_command_and_the_frame_s_command_picks_it():
    from bevlm.structures import kinematic_waypoints

    head = _head(ego_prior_dims=5, kinematic_prior="ctra", num_commands=3)
    hidden = torch.randn(3, K, D)
    ego = torch.tensor([[5.0, 0.0, 0.5, 0.0, 0.2], [3.0, 0.3, -1.0, 0.0, -0.1], [8.0, 0.0, 0.0, 0.0, 0.0]])
    base = kinematic_waypoints(ego.double(), H, 0.5, "ctra").float()
    # every command's plan, from the two offset paths' outputs split into C x H x 2
    modes = (head.mlp(hidden.flatten(1)) + head.ego_prior(ego)).view(3, 3, H, 2).cumsum(2) + base[:, None]
    command = torch.tensor([2, 0, 1])
    out = head(hidden, ego, command)
    torch.testing.assert_close(out, modes[torch.arange(3), command])
    for c in range(3):  # a batch of one command: that command's plans
        torch.testing.assert_close(head(hidden, ego, torch.full((3,), c)), modes[:, c])
    assert not torch.allclose(modes[:, 0], modes[:, 1])  # the plans differ
    # only the chosen plan is trained: the output rows of the other commands get no gradient
    head.zero_grad()
    head.loss(head(hidden, ego, torch.zeros(3, dtype=torch.long)), torch.zeros(3, H, 2))["loss_traj"].backward()
    grad = head.mlp[-1].weight.grad.view(3, H * 2, -1)
    assert grad[0].abs().sum() > 0 and grad[1:].abs().sum() == 0
    with pytest.raises(ValueError, match=r"needs command \[3\].*ego_command"):
        head(hidden, ego)
    with pytest.raises(ValueError, match="in \\[0, 3\\)"):
        head(hidden, ego, torch.tensor([0, 3, 1]))
    with pytest.raises(ValueError, match="integer"):
        head(hidden, ego, torch.zeros(3))
    with pytest.raises(ValueError, match="num_commands=-1"):
        _head(num_commands=-1)


def test_zero_init_command_head_starts_at_the_prior_for_every_command():
    from bevlm.structures import kinematic_waypoints

    head = _head(ego_prior_dims=5, kinematic_prior="ctra", num_commands=3, zero_init_offsets=True)
    hidden = torch.randn(2, K, D)
    ego = torch.tensor([[5.0, 0.0, 0.5, 0.0, 0.2], [3.0, 0.3, -1.0, 0.0, -0.1]])
    base = kinematic_waypoints(ego.double(), H, 0.5, "ctra").float()
    for c in range(3):
        assert torch.equal(head(hidden, ego, torch.full((2,), c)), base)


def test_command_as_input_makes_one_plan_that_reads_the_command_one_hot():
    from bevlm.structures import kinematic_waypoints

    head = _head(ego_prior_dims=5, kinematic_prior="ctra", num_commands=3, command_input=True)
    assert head.mlp[-1].out_features == H * 2 and head.ego_prior[0].in_features == 5 + 3
    hidden = torch.randn(3, K, D)
    ego = torch.tensor([[5.0, 0.0, 0.5, 0.0, 0.2], [3.0, 0.3, -1.0, 0.0, -0.1], [8.0, 0.0, 0.0, 0.0, 0.0]])
    base = kinematic_waypoints(ego.double(), H, 0.5, "ctra").float()
    command = torch.tensor([2, 0, 1])
    onehot = torch.eye(3)[command]  # [[0, 0, 1], [1, 0, 0], [0, 1, 0]]
    expected = (head.mlp(hidden.flatten(1)) + head.ego_prior(torch.cat([ego, onehot], -1))).view(3, H, 2)
    torch.testing.assert_close(head(hidden, ego, command), expected.cumsum(1) + base)
    plans = [head(hidden, ego, torch.full((3,), c)) for c in range(3)]
    assert not torch.allclose(plans[0], plans[1]) and not torch.allclose(plans[1], plans[2])
    # one set of weights for every command: a batch of one command trains the shared output layer and
    # only that command's input column of the ego path
    head.zero_grad()
    head.loss(head(hidden, ego, torch.ones(3, dtype=torch.long)), torch.zeros(3, H, 2))["loss_traj"].backward()
    assert head.mlp[-1].weight.grad.abs().sum() > 0
    col = head.ego_prior[0].weight.grad[:, 5:]  # [hidden, C]
    assert col[:, 1].abs().sum() > 0 and col[:, [0, 2]].abs().sum() == 0
    with pytest.raises(ValueError, match=r"needs command \[3\]"):
        head(hidden, ego)
    with pytest.raises(ValueError, match="num_commands > 0 and ego_prior_dims > 0"):
        _head(ego_prior_dims=5, command_input=True)
    with pytest.raises(ValueError, match="num_commands > 0 and ego_prior_dims > 0"):
        _head(num_commands=3, command_input=True)


def test_zero_init_command_input_head_starts_at_the_prior_for_every_command():
    from bevlm.structures import kinematic_waypoints

    head = _head(ego_prior_dims=5, kinematic_prior="ctra", num_commands=3, command_input=True,
                 zero_init_offsets=True)
    hidden = torch.randn(2, K, D)
    ego = torch.tensor([[5.0, 0.0, 0.5, 0.0, 0.2], [3.0, 0.3, -1.0, 0.0, -0.1]])
    base = kinematic_waypoints(ego.double(), H, 0.5, "ctra").float()
    for c in range(3):
        assert torch.equal(head(hidden, ego, torch.full((2,), c)), base)


@pytest.mark.parametrize("command_input", [False, True])
def test_the_model_feeds_the_command_to_the_head_only(tiny_world, command_input):
    """A tiny BEV-VLM whose head plans per command: training and prediction read each frame's
    ego_command, the LLM prefix does not change with it, and a sample without one is a clear error."""
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope

    from bevlm.registry import DATASETS
    from tests.conftest import REPO

    init_default_scope("bevlm")
    cfg = Config.fromfile(f"{REPO}/configs/bev_vlm_tiny.py")
    mcfg = cfg.model.to_dict()
    mcfg["traj_head"] = dict(mcfg["traj_head"], num_commands=3, command_input=command_input)
    torch.manual_seed(0)
    model = MODELS.build(mcfg)
    ds = DATASETS.build(dict(type="BEVDriveDataset", ann_file=f"{tiny_world}/infos/bevlm_infos_train.pkl",
                             data_root=f"{tiny_world}/", pipeline=cfg.pipeline, queue_length=1, qa_mode="frame"))
    data = model.data_preprocessor(pseudo_collate([ds[0], ds[1]]), True)
    losses = model(**data, mode="loss")
    assert torch.isfinite(losses["loss_traj"]) and losses["loss_traj"] > 0
    model.eval()
    plans = []
    for c in range(3):
        data = model.data_preprocessor(pseudo_collate([ds[0]]), False)
        data["data_samples"][0].ego_command = torch.tensor(c)
        with torch.no_grad():
            out = model(**data, mode="predict")[0]
        plans.append(out.pred_traj)
        if c == 0:
            answers = dict(out.pred_answers)
        else:  # the answers cannot read the command
            assert dict(out.pred_answers) == answers
    assert not torch.allclose(plans[0], plans[1])
    data = model.data_preprocessor(pseudo_collate([ds[0]]), False)
    del data["data_samples"][0].ego_command
    with pytest.raises(ValueError, match="no ego_command"):
        model(**data, mode="predict")


def _planning_frames(n_scenes: int = 6, per_scene: int = 12, seed: int = 0) -> list[dict]:
    """Info-file-like frames whose futures bend left / right / not at all (the command says which) and
    drift with the speed: a rule the ego status and the command give and CTRA misses."""
    import numpy as np

    from bevlm.evaluation.planning_baselines import kinematic_plan

    rng = np.random.default_rng(seed)
    t = 0.5 * np.arange(1, H + 1)
    out = []
    for s in range(n_scenes):
        for k in range(per_scene):
            ego = np.array([rng.uniform(2, 10), 0.0, rng.uniform(-1, 1), 0.0, rng.uniform(-0.05, 0.05)])
            bend = rng.choice([-3.0, 0.0, 3.0]) * (t / 3) ** 2 + 0.02 * ego[0] * t
            out.append({"scene_token": f"s{s}", "token": f"s{s}_{k}", "ego_status": ego,
                        "ego_fut_traj": kinematic_plan(ego, H) + np.stack([0 * t, bend], 1), "ego_fut_mask": np.ones(H)})
    return out


@pytest.mark.parametrize("num_commands", [0, 3])
def test_fitted_prior_plans_what_the_fitted_planner_plans(num_commands):
    """The untrained head with a fitted prior (zero-initialised offsets) plans exactly what the fitted
    ego-status planner plans (its normalisation folded into the first layer), the prior is frozen and
    survives a state-dict round trip; an unfitted prior refuses to plan."""
    import numpy as np

    from bevlm.evaluation.planning_baselines import fit_ego_mlp
    from bevlm.structures import driving_command

    frames = _planning_frames()
    planner = fit_ego_mlp(frames, steps=H, hidden=16, max_epochs=200, command=num_commands > 0)
    kw = dict(ego_prior_dims=5, kinematic_prior="ctra", zero_init_offsets=True, fitted_prior_hidden=16,
              num_commands=num_commands, command_input=num_commands > 0)
    head = _head(**kw)
    assert all(not p.requires_grad for p in head.fitted_prior.parameters())
    ego = np.stack([f["ego_status"] for f in frames[:8]])
    cmd = np.array([driving_command(f["ego_fut_traj"], f["ego_fut_mask"]) for f in frames[:8]])
    args = (torch.randn(8, K, D), torch.tensor(ego, dtype=torch.float32)) + \
        ((torch.tensor(cmd),) if num_commands else ())
    with pytest.raises(ValueError, match="not been fitted.*EgoPriorFitHook"):
        head(*args)
    head.load_fitted_prior(planner.net, planner.mean, planner.std)
    want = planner(ego, cmd) if num_commands else planner(ego)
    torch.testing.assert_close(head(*args).double(), torch.as_tensor(want), atol=1e-4, rtol=1e-4)
    other = _head(**kw)
    other.load_state_dict(head.state_dict())
    assert torch.equal(other(*args), head(*args))
    with pytest.raises(ValueError, match="parameters"):
        head.load_fitted_prior(torch.nn.Sequential(torch.nn.Linear(3, 4)), np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="no fitted prior"):
        _head(ego_prior_dims=5, kinematic_prior="ctra").load_fitted_prior(planner.net, planner.mean, planner.std)
    with pytest.raises(ValueError, match="kinematic_prior='ctra'"):
        _head(fitted_prior_hidden=16)


def test_ego_prior_fit_hook_fits_the_head_on_the_training_frames(tmp_path):
    """The hook fits the prior from the training dataset's info frames (each frame once) without
    touching the training's random stream, writes its record, leaves a resumed training's prior
    alone and names the fix for a head without a prior."""
    import json
    import logging
    from types import SimpleNamespace

    import numpy as np

    from bevlm.engine import EgoPriorFitHook
    from bevlm.evaluation.planning_baselines import fit_ego_mlp

    frames = _planning_frames()
    # two items of the first frame: the fit still sees it once
    dataset = SimpleNamespace(frames=frames, data_list=[{"frame": 0}] + [{"frame": i} for i in range(len(frames))])
    head = _head(ego_prior_dims=5, kinematic_prior="ctra", zero_init_offsets=True, fitted_prior_hidden=16)
    runner = SimpleNamespace(iter=0, model=SimpleNamespace(traj_head=head), work_dir=str(tmp_path),
                             logger=logging.getLogger("ego_prior_fit_test"), cfg=SimpleNamespace(filename="c.py"),
                             train_dataloader=SimpleNamespace(dataset=dataset))
    state = torch.get_rng_state()
    EgoPriorFitHook(max_epochs=200).before_train(runner)
    assert torch.equal(state, torch.get_rng_state())
    assert bool(head.fitted_prior_ready)
    planner = fit_ego_mlp(frames, steps=H, hidden=16, max_epochs=200)
    ego = np.stack([f["ego_status"] for f in frames])
    plan = head(torch.zeros(len(frames), K, D), torch.tensor(ego, dtype=torch.float32))
    torch.testing.assert_close(plan.double(), torch.as_tensor(planner(ego)), atol=1e-4, rtol=1e-4)
    record = json.loads((tmp_path / "ego_prior_fit.json").read_text())
    assert record["train_frames"] == len(frames) and record["epochs"] == planner.epochs and not record["command"]
    # resumed: the checkpoint's prior stays
    before = {k: v.clone() for k, v in head.state_dict().items()}
    EgoPriorFitHook(max_epochs=50, seed=3).before_train(SimpleNamespace(**{**vars(runner), "iter": 5}))
    assert all(torch.equal(before[k], v) for k, v in head.state_dict().items())
    runner.model = SimpleNamespace(traj_head=_head(ego_prior_dims=5, kinematic_prior="ctra"))
    with pytest.raises(ValueError, match="c.py.*fitted_prior_hidden=64"):
        EgoPriorFitHook().before_train(runner)


def test_ego_prior_fit_hook_adds_the_frames_of_extra_info_files(tmp_path):
    """``extra_ann_files``: their frames join the fit (the plan equals the planner fitted on both sets),
    the record counts them; a file holding a scene of the config's test set, a frame without a future,
    or a bare string are refused, naming the file and the fix, before anything is fitted."""
    import json
    import logging
    import pickle
    from types import SimpleNamespace

    import numpy as np
    from mmengine.config import Config

    from bevlm.engine import EgoPriorFitHook
    from bevlm.evaluation.planning_baselines import fit_ego_mlp

    def info_file(path, frames):
        plain = [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in f.items()} for f in frames]
        with open(path, "wb") as f:
            pickle.dump({"metainfo": {}, "data_list": plain}, f)
        return str(path)

    frames = _planning_frames(n_scenes=4)
    extra = [dict(f, scene_token="x" + f["scene_token"], token="x" + f["token"])
             for f in _planning_frames(n_scenes=4, seed=1)]
    val = [dict(f, scene_token="v" + f["scene_token"], token="v" + f["token"])
           for f in _planning_frames(n_scenes=2, seed=2)]
    extra_file = info_file(tmp_path / "extra.pkl", extra)
    val_file = info_file(tmp_path / "val.pkl", val)
    cfg = Config(dict(test_dataloader=dict(dataset=dict(type="BEVDriveDataset", data_root=str(tmp_path),
                                                        ann_file="val.pkl"))))
    dataset = SimpleNamespace(frames=frames, data_list=[{"frame": i} for i in range(len(frames))])

    def runner():
        head = _head(ego_prior_dims=5, kinematic_prior="ctra", zero_init_offsets=True, fitted_prior_hidden=16)
        return SimpleNamespace(iter=0, model=SimpleNamespace(traj_head=head), work_dir=str(tmp_path), cfg=cfg,
                               logger=logging.getLogger("ego_prior_fit_test"),
                               train_dataloader=SimpleNamespace(dataset=dataset))

    r = runner()
    EgoPriorFitHook(max_epochs=200, extra_ann_files=[extra_file]).before_train(r)
    planner = fit_ego_mlp(frames + extra, steps=H, hidden=16, max_epochs=200)
    ego = np.stack([f["ego_status"] for f in val])
    plan = r.model.traj_head(torch.zeros(len(val), K, D), torch.tensor(ego, dtype=torch.float32))
    torch.testing.assert_close(plan.double(), torch.as_tensor(planner(ego)), atol=1e-4, rtol=1e-4)
    alone = fit_ego_mlp(frames, steps=H, hidden=16, max_epochs=200)
    assert not np.allclose(planner(ego), alone(ego), atol=1e-3)  # the extra frames changed the fit
    record = json.loads((tmp_path / "ego_prior_fit.json").read_text())
    assert (record["train_frames"], record["extra_frames"], record["extra_ann_files"]) == \
        (len(frames), len(extra), [extra_file])

    r = runner()
    with pytest.raises(ValueError, match="val.pkl: 2 of its scenes are in the config's val / test set"):
        EgoPriorFitHook(extra_ann_files=[extra_file, val_file]).before_train(r)
    assert not bool(r.model.traj_head.fitted_prior_ready)
    broken = info_file(tmp_path / "broken.pkl", [{k: v for k, v in f.items() if k != "ego_fut_traj"} for f in extra])
    with pytest.raises(KeyError, match="broken.pkl: frame xs0_0 has no 'ego_fut_traj'"):
        EgoPriorFitHook(extra_ann_files=[broken]).before_train(r)
    with pytest.raises(TypeError, match=r"Fix: extra_ann_files=\["):
        EgoPriorFitHook(extra_ann_files=extra_file)

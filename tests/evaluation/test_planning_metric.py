"""Planning metric: L2 (ST-P3 / UniAD conventions), masks and oriented-box collisions."""
import math

import numpy as np
import pytest
import torch

from bevlm.evaluation.planning_metric import PlanningMetric, box_corners, boxes_overlap, ego_collisions

STRAIGHT = np.stack([np.arange(1, 7) * 2.0, np.zeros(6)], axis=-1)  # 4 m/s along +x, [6, 2]
NO_AGENT = np.full((1, 6, 5), np.nan)


def _run(samples):
    metric = PlanningMetric()
    metric.process({}, samples)
    return metric.compute_metrics(metric.results)


def test_l2_conventions():
    offsets = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    pred = STRAIGHT + np.stack([np.zeros(6), offsets], axis=-1)
    out = _run([dict(pred_traj=torch.tensor(pred), gt_traj=STRAIGHT, gt_traj_mask=np.ones(6, bool),
                     gt_agent_fut_boxes=NO_AGENT, gt_labels=[0])])
    assert out["L2_1s_stp3"] == pytest.approx(0.15)   # mean of steps 1-2
    assert out["L2_2s_stp3"] == pytest.approx(0.25)   # mean of steps 1-4
    assert out["L2_3s_stp3"] == pytest.approx(0.35)
    assert out["L2_1s_uniad"] == pytest.approx(0.2)   # value at step 2
    assert out["L2_2s_uniad"] == pytest.approx(0.4)
    assert out["L2_3s_uniad"] == pytest.approx(0.6)
    assert out["L2_avg_stp3"] == pytest.approx(0.25)
    assert out["collision_3s_stp3"] == 0.0 and out["frames"] == 1


def test_masked_steps_are_excluded_per_step():
    a = dict(pred_traj=STRAIGHT + [0.0, 0.2], gt_traj=STRAIGHT, gt_traj_mask=np.ones(6, bool))
    b = dict(pred_traj=STRAIGHT + [3.0, 4.0], gt_traj=STRAIGHT,                          # error 5 m
             gt_traj_mask=np.array([1, 1, 1, 0, 0, 0], bool))
    out = _run([a, b])
    assert out["L2_1s_uniad"] == pytest.approx((0.2 + 5.0) / 2)
    assert out["L2_3s_uniad"] == pytest.approx(0.2)                      # only frame a is valid at step 6
    assert out["L2_3s_stp3"] == pytest.approx((3 * 2.6 + 3 * 0.2) / 6)


def test_head_on_agent_collides_and_lateral_offset_does_not():
    head_on = np.full((1, 6, 5), np.nan)
    head_on[0, 5] = [12.0 + 4.0, 0.0, 4.5, 1.9, math.pi]   # 4 m ahead of the ego centre: bumpers overlap
    out = _run([dict(pred_traj=STRAIGHT, gt_traj=STRAIGHT, gt_traj_mask=np.ones(6, bool),
                     gt_agent_fut_boxes=head_on, gt_labels=[0])])
    assert out["collision_3s_uniad"] == 1.0
    assert out["collision_3s_stp3"] == pytest.approx(1 / 6)
    assert out["collision_2s_uniad"] == 0.0 and out["collision_1s_stp3"] == 0.0
    lateral = np.concatenate([STRAIGHT + [0.0, 3.0], np.tile([4.5, 1.85, 0.0], (6, 1))], axis=-1)[None]
    out = _run([dict(pred_traj=STRAIGHT, gt_traj=STRAIGHT, gt_traj_mask=np.ones(6, bool),
                     gt_agent_fut_boxes=lateral, gt_labels=[0])])
    assert out["collision_1s_uniad"] == out["collision_3s_uniad"] == out["collision_3s_stp3"] == 0.0


def test_signal_heads_are_not_obstacles():
    """A box of the traffic_light class (the mini world's signal heads, 5 m above the road) on the
    path is no collision; the same box labelled a car is; boxes without their classes are an error."""
    from bevlm.datasets.converters.nuscenes_infos import CLASSES

    box = np.full((2, 6, 5), np.nan)
    box[0, 2] = [6.0, 0.0, 0.4, 0.45, 1.57]     # on the ego's waypoint at 1.5 s
    box[1, 4] = [30.0, 0.0, 4.5, 1.9, 0.0]      # far from the path
    sample = dict(pred_traj=STRAIGHT, gt_traj=STRAIGHT, gt_traj_mask=np.ones(6, bool), gt_agent_fut_boxes=box)
    light, car = CLASSES.index("traffic_light"), CLASSES.index("car")
    assert _run([dict(sample, gt_labels=[light, car])])["collision_3s_stp3"] == 0.0
    assert _run([dict(sample, gt_labels=[car, car])])["collision_3s_uniad"] == 0.0  # gone by step 6
    assert _run([dict(sample, gt_labels=[car, car])])["collision_2s_stp3"] == pytest.approx(1 / 4)
    with pytest.raises(KeyError, match="without gt_labels"):
        _run([sample])
    with pytest.raises(ValueError, match="2 agent boxes but 1 gt_labels"):
        _run([dict(sample, gt_labels=[car])])
    # other label spaces name their classes
    metric = PlanningMetric(class_names=("signal", "traffic_light"))
    assert metric.ignore_labels.tolist() == [1]


def test_ego_box_follows_heading():
    north = np.stack([np.zeros(6), np.arange(1, 7) * 2.0], axis=-1)   # driving along +y
    agent = np.full((1, 6, 5), np.nan)
    agent[0, 5] = [1.5, 12.0, 1.0, 1.0, 0.0]   # x in [1.0, 2.0]: hit only by an x-aligned 4.084 m box
    assert not ego_collisions(north, agent).any()
    east = np.stack([np.arange(-10.0, 1.0, 2.0), np.full(6, 12.0)], axis=-1)  # reaches (0, 12) along +x
    assert ego_collisions(east, agent).tolist() == [False] * 5 + [True]


def test_separating_axis_on_rotated_boxes():
    unit = box_corners(np.zeros(2), np.array(2.0), np.array(2.0), np.array(0.0))
    diamond = box_corners(np.array([2.3, 0.0]), np.array(2.0), np.array(2.0), np.array(math.pi / 4))
    # the diamond's left tip reaches x = 2.3 - sqrt(2) = 0.886 < 1: overlap
    assert boxes_overlap(unit, diamond)
    far = box_corners(np.array([2.5, 0.0]), np.array(2.0), np.array(2.0), np.array(math.pi / 4))
    assert not boxes_overlap(unit, far)   # tip at 1.086 > 1
    # axis-aligned bounding boxes would overlap here, the rotated boxes do not
    corner = box_corners(np.array([1.9, 1.9]), np.array(2.0), np.array(2.0), np.array(math.pi / 4))
    assert not boxes_overlap(unit, corner)


def test_missing_key_error():
    metric = PlanningMetric()
    with pytest.raises(KeyError, match="lacks 'pred_traj'"):
        metric.process({}, [dict(gt_traj=STRAIGHT, gt_traj_mask=np.ones(6, bool))])

"""Auxiliary BEV head: targets and trainability."""
import pytest
import torch

from bevlm.models.bev import ego_xy_to_bev_ij
from bevlm.models.heads.bev_aux_head import BEVAuxHead

PC = (-16.0, -16.0, -3.0, 16.0, 16.0, 3.0)  # 16 x 16 grid of 2 m cells


def _head():
    torch.manual_seed(0)
    return BEVAuxHead(embed_dims=8, num_classes=3, bev_h=16, bev_w=16, pc_range=PC, hidden_dims=8)


def test_single_box_targets_peak_at_its_cell():
    head = _head()
    box = torch.tensor([[5.0, -3.0, 0.0, 4.5, 1.9, 1.6, 0.3, 0.0, 0.0]])
    heat, occ = head.build_targets([box], [torch.tensor([2])])
    assert heat.shape == (1, 3, 16, 16) and occ.shape == (1, 1, 16, 16)
    i, j = ego_xy_to_bev_ij(box[0, :2], 16, 16, PC).round().long().tolist()
    assert heat[0, 2, i, j] == 1.0
    assert int((heat == 1.0).sum()) == 1  # one peak, in the box's class only
    assert heat[0, :2].abs().max() == 0
    assert 0 < heat[0, 2, i + 1, j] < 1  # Gaussian falls off around the peak
    assert occ[0, 0, i, j] == 1 and occ.sum() >= 1
    assert occ[0, 0, 0, 0] == 0


def test_occupancy_covers_rotated_footprint_and_ignores_far_boxes():
    head = _head()
    # A 10 m x 2 m box along y (yaw = 90 deg) at the origin covers cells of one column band.
    box = torch.tensor([[1.0, 1.0, 0.0, 10.0, 2.0, 1.5, torch.pi / 2],
                        [100.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0]])
    heat, occ = head.build_targets([box], [torch.tensor([0, 1])])
    rows = occ[0, 0].sum(1)
    cols = occ[0, 0].sum(0)
    assert int(rows.gt(0).sum()) == 1 and int(cols.gt(0).sum()) == 5  # 2 m across, 10 m along y
    assert heat[0, 1].abs().max() == 0  # the far box is outside the grid


def test_loss_decreases_and_occupancy_score_in_unit_interval():
    head = _head()
    bev = torch.randn(2, 256, 8)
    boxes = [torch.tensor([[5.0, -3.0, 0.0, 4.5, 1.9, 1.6, 0.3]]), torch.zeros(0, 9)]
    labels = [torch.tensor([1]), torch.zeros(0, dtype=torch.long)]
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = head.loss(head(bev), boxes, labels)
        total = loss["loss_heatmap"] + loss["loss_occ"]
        losses.append(total.item())
        opt.zero_grad()
        total.backward()
        opt.step()
    assert losses[-1] < 0.7 * losses[0]
    score = head.occupancy_score(bev)
    assert score.shape == (2, 256) and bool(((score >= 0) & (score <= 1)).all())


def test_bad_boxes_raise():
    with pytest.raises(ValueError, match="gt_boxes"):
        _head().build_targets([torch.zeros(2, 3)], [torch.zeros(2, dtype=torch.long)])

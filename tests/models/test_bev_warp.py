"""BEV grid conventions and ego-motion warping of the previous BEV."""
import math

import pytest
import torch

from bevlm.models.bev import (bev_grid_xy, bev_ij_to_ego_xy, bev_map_to_tokens, bev_tokens_to_map,
                              ego_xy_to_bev_ij, warp_prev_bev)

H = W = 8
PC = (-8.0, -8.0, -3.0, 8.0, 8.0, 3.0)  # 2 m cells


def _marked(i, j, c=3):
    m = torch.zeros(1, c, H, W)
    m[0, :, i, j] = torch.arange(1.0, c + 1)
    return bev_map_to_tokens(m)  # [1, H*W, C]


def _rigid(yaw_deg, tx, ty):
    t = torch.eye(4)
    a = math.radians(yaw_deg)
    t[:2, :2] = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    t[0, 3], t[1, 3] = tx, ty
    return t


def test_grid_convention_and_round_trip():
    xy = bev_grid_xy(H, W, PC)
    assert xy[0, 0].tolist() == pytest.approx([7.0, 7.0])  # row 0 = front, col 0 = left
    assert xy[H - 1, W - 1].tolist() == pytest.approx([-7.0, -7.0])
    assert xy[1, 0, 0] < xy[0, 0, 0] and xy[0, 1, 1] < xy[0, 0, 1]
    ij = ego_xy_to_bev_ij(xy, H, W, PC)
    ii, jj = torch.meshgrid(torch.arange(float(H)), torch.arange(float(W)), indexing="ij")
    torch.testing.assert_close(ij, torch.stack([ii, jj], -1))
    pts = torch.randn(10, 2) * 5
    torch.testing.assert_close(bev_ij_to_ego_xy(ego_xy_to_bev_ij(pts, H, W, PC), H, W, PC), pts)
    tokens = torch.randn(2, H * W, 4)
    torch.testing.assert_close(bev_map_to_tokens(bev_tokens_to_map(tokens, H, W)), tokens)


def test_identity_motion_is_identity():
    prev = torch.randn(2, H * W, 5)
    out = warp_prev_bev(prev, torch.eye(4).expand(2, 4, 4), H, W, PC)
    torch.testing.assert_close(out, prev, atol=1e-6, rtol=0)


def test_forward_translation_by_one_cell_shifts_one_row_back():
    prev = torch.randn(1, H * W, 3)
    # Ego drives 2 m (one cell) forward: static points move 2 m backwards in the new frame.
    out = warp_prev_bev(prev, _rigid(0.0, -2.0, 0.0), H, W, PC)
    prev_map, out_map = bev_tokens_to_map(prev, H, W), bev_tokens_to_map(out, H, W)
    torch.testing.assert_close(out_map[:, :, 1:], prev_map[:, :, :-1], atol=1e-5, rtol=0)
    assert out_map[:, :, 0].abs().max() == 0  # new front row comes from outside the old grid


def test_rotation_90_deg_maps_marked_cell():
    # Ego turns 90 deg left: a point ahead at prev (7, 1) is at (1, -7) (to the right) now.
    prev = _marked(0, 3)
    assert bev_ij_to_ego_xy(torch.tensor([0.0, 3.0]), H, W, PC).tolist() == pytest.approx([7.0, 1.0])
    out_map = bev_tokens_to_map(warp_prev_bev(prev, _rigid(-90.0, 0.0, 0.0), H, W, PC), H, W)
    target = ego_xy_to_bev_ij(torch.tensor([1.0, -7.0]), H, W, PC).round().long().tolist()
    assert target == [3, 7]
    expected = bev_tokens_to_map(_marked(3, 7), H, W)
    torch.testing.assert_close(out_map, expected, atol=1e-5, rtol=0)


def test_batched_motions_are_independent():
    prev = torch.randn(2, H * W, 3)
    motions = torch.stack([torch.eye(4), _rigid(0.0, -2.0, 0.0)])
    out = warp_prev_bev(prev, motions, H, W, PC)
    torch.testing.assert_close(out[:1], prev[:1], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1:], warp_prev_bev(prev[1:], motions[1:], H, W, PC))

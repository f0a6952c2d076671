"""Deformable attention core, camera projection and spatial cross-attention."""
import math

import pytest
import torch

from bevlm.models.bev import (SpatialCrossAttention, ego2img_from_rig, multi_scale_deformable_attn,
                              multi_scale_deformable_attn_reference, pillar_reference_points,
                              project_reference_points)
from bevlm.models.bev.grid import ego_xy_to_bev_ij
from bevlm.structures import CAMERA_NAMES, nominal_rig

IMG_W, IMG_H = 320, 180


@pytest.fixture(scope="module")
def ego2img():
    return ego2img_from_rig(nominal_rig((IMG_W, IMG_H)), CAMERA_NAMES).unsqueeze(0)  # [1, 6, 4, 4]


def test_msda_matches_loop_reference_including_outside_points():
    g = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[3, 5], [2, 3]])
    b, q, heads, ch, levels, points = 2, 4, 2, 3, 2, 3
    value = torch.randn(b, 15 + 6, heads, ch, generator=g)
    # Locations in [-0.3, 1.3]: some fall outside the maps (read zeros / partial borders).
    locs = torch.rand(b, q, heads, levels, points, 2, generator=g) * 1.6 - 0.3
    locs[0, 0, 0, 0, 0] = torch.tensor([1.5, 1.5])  # fully outside
    weights = torch.rand(b, q, heads, levels, points, generator=g)
    fast = multi_scale_deformable_attn(value, shapes, locs, weights)
    ref = multi_scale_deformable_attn_reference(value, shapes, locs, weights)
    assert fast.shape == (b, q, heads * ch)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=0)


def test_msda_samples_pixel_centre_exactly():
    value = torch.arange(6.0).view(1, 6, 1, 1)  # one level 2 x 3, values 0..5 row-major
    loc = torch.tensor([(1 + 0.5) / 3, (1 + 0.5) / 2]).view(1, 1, 1, 1, 1, 2)  # pixel (row 1, col 1)
    out = multi_scale_deformable_attn(value, torch.tensor([[2, 3]]), loc, torch.ones(1, 1, 1, 1, 1))
    assert out.item() == pytest.approx(4.0)


def test_point_ahead_projects_to_hand_computed_front_pixel(ego2img):
    # CAM_FRONT: at (1.70, 0.02, 1.51), looking along +x; f = 1266.4 * 0.2, c = (816.3, 491.5) * 0.2.
    # Point (10, 0, 1) in camera coords: x_cam = 0.02, y_cam = 0.51, z_cam = 8.30.
    f, cx, cy = 1266.4 * 0.2, 816.3 * 0.2, 491.5 * 0.2
    u = f * 0.02 / 8.30 + cx
    v = f * 0.51 / 8.30 + cy
    ref_cam, mask = project_reference_points(torch.tensor([[[10.0, 0.0, 1.0]]]), ego2img, (IMG_H, IMG_W))
    front, back = CAMERA_NAMES.index("CAM_FRONT"), CAMERA_NAMES.index("CAM_BACK")
    px = ref_cam[0, front, 0, 0] * torch.tensor([IMG_W, IMG_H])
    assert px.tolist() == pytest.approx([u, v], abs=1e-3)
    assert bool(mask[0, front, 0, 0])
    assert not bool(mask[0, back, 0, 0])  # behind CAM_BACK (negative depth)


def test_cell_straight_behind_seen_by_back_camera_only(ego2img):
    bev_h = bev_w = 32
    pc_range = (-32.0, -32.0, -3.0, 32.0, 32.0, 3.0)
    ref_3d = pillar_reference_points(bev_h, bev_w, pc_range, num_z_anchors=4)  # [Q, 4, 3]
    i, j = ego_xy_to_bev_ij(torch.tensor([-21.0, 1.0]), bev_h, bev_w, pc_range).round().long().tolist()
    cell = i * bev_w + j
    assert ref_3d[cell, 0, :2].tolist() == pytest.approx([-21.0, 1.0])
    _, mask = project_reference_points(ref_3d, ego2img, (IMG_H, IMG_W))
    seen = mask[0, :, cell].any(-1)  # [N]
    assert seen.tolist() == [name == "CAM_BACK" for name in CAMERA_NAMES]
    # ...and a cell straight ahead is seen by CAM_FRONT but not CAM_BACK.
    i, j = ego_xy_to_bev_ij(torch.tensor([21.0, 1.0]), bev_h, bev_w, pc_range).round().long().tolist()
    seen = mask[0, :, i * bev_w + j].any(-1)
    assert bool(seen[CAMERA_NAMES.index("CAM_FRONT")]) and not bool(seen[CAMERA_NAMES.index("CAM_BACK")])


def _dense_sca(sca, query, value, shapes, ref_cam, mask):
    """Every camera processes every query (no gathering); same averaging rule."""
    b, q, c = query.shape
    n = mask.shape[1]
    out = torch.zeros(b, q, c)
    for ni in range(n):
        r = ref_cam[:, ni]
        m = mask[:, ni]
        heads, lv, z, p = sca.num_heads, sca.num_levels, sca.num_z_anchors, sca.num_points
        off = sca.sampling_offsets(query).view(b, q, heads, lv, z, p, 2)
        off = off / shapes.flip(-1).view(1, 1, 1, lv, 1, 1, 2)
        locs = (r.view(b, q, 1, 1, z, 1, 2) + off).reshape(b, q, heads, lv, z * p, 2)
        w = sca.attention_weights(query).view(b, q, heads, -1).softmax(-1).view(b, q, heads, lv, z, p)
        w = w * m.view(b, q, 1, 1, z, 1)
        w = (w / w.sum((3, 4, 5), keepdim=True).clamp(min=1e-6)).reshape(b, q, heads, lv, z * p)
        v = sca.value_proj(value.view(b, n, -1, c)[:, ni]).view(b, -1, heads, c // heads)
        o = multi_scale_deformable_attn(v, shapes, locs, w)
        out += o * m.any(-1, keepdim=True)
    out = out / mask.any(-1).sum(1).clamp(min=1).unsqueeze(-1)
    return sca.output_proj(out) + query


def test_sca_gathered_equals_dense_and_invisible_query_keeps_residual(ego2img):
    torch.manual_seed(0)
    sca = SpatialCrossAttention(embed_dims=8, num_heads=2, num_levels=2, num_points=2, num_z_anchors=2)
    torch.nn.init.normal_(sca.attention_weights.weight)  # non-trivial weights
    torch.nn.init.normal_(sca.sampling_offsets.weight, std=0.1)
    pc_range = (-32.0, -32.0, -3.0, 32.0, 32.0, 3.0)
    ref_3d = pillar_reference_points(6, 6, pc_range, 2)
    ref_3d[0] = torch.tensor([0.5, 0.0, 10.0])  # a query above every camera: invisible everywhere
    ref_cam, mask = project_reference_points(ref_3d, ego2img, (IMG_H, IMG_W))
    assert not bool(mask[0, :, 0].any())
    query = torch.randn(1, 36, 8)
    shapes = torch.tensor([[4, 6], [2, 3]])
    value = torch.randn(6, 24 + 6, 8)
    out = sca(query, None, value, shapes, ref_cam, mask)
    dense = _dense_sca(sca, query, value, shapes, ref_cam, mask)
    torch.testing.assert_close(out, dense, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[0, 0], query[0, 0] + sca.output_proj.bias)
    assert math.isfinite(out.abs().sum().item())


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 5e-3), (torch.bfloat16, 5e-2)])
def test_sca_in_half_precision_is_finite_and_close_to_fp32(ego2img, dtype, tol):
    """Points behind a camera project to |x| ~ 1e6 (beyond fp16's range): masked, they must not
    turn the output into NaN under fp16 (or bf16) weights and inputs."""
    torch.manual_seed(0)
    sca = SpatialCrossAttention(embed_dims=8, num_heads=2, num_levels=2, num_points=2, num_z_anchors=2)
    ref_3d = pillar_reference_points(6, 6, (-32.0, -32.0, -3.0, 32.0, 32.0, 3.0), 2)
    ref_cam, mask = project_reference_points(ref_3d, ego2img, (IMG_H, IMG_W))
    assert float(ref_cam.abs().max()) > torch.finfo(torch.float16).max  # the case that overflowed
    query, value = torch.randn(1, 36, 8), torch.randn(6, 30, 8)
    shapes = torch.tensor([[4, 6], [2, 3]])
    ref = sca(query, None, value, shapes, ref_cam, mask)
    out = sca.to(dtype)(query.to(dtype), None, value.to(dtype), shapes, ref_cam, mask)
    assert out.dtype == dtype and bool(torch.isfinite(out).all())
    torch.testing.assert_close(out.float(), ref, atol=tol, rtol=tol)

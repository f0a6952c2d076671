"""Multi-scale deformable attention core in pure PyTorch.

Deformable DETR (Zhu et al., "Deformable DETR: Deformable Transformers for
End-to-End Object Detection", ICLR 2021), Eq. 3: every query samples ``P``
points on each of ``L`` feature levels per head and sums the bilinearly
interpolated values with softmax-normalised weights. The sampling is done
with ``F.grid_sample`` (bilinear, zero padding, ``align_corners=False``), so no
compiled op is needed; :func:`multi_scale_deformable_attn_reference` is a
direct loop implementation of the same bilinear rule, used by the tests.

Sampling locations are (x, y) = (column, row) normalised to [0, 1] over the
level, with pixel ``k`` covering ``[k / w, (k + 1) / w)``; locations outside
the map read zeros.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _level_shapes(spatial_shapes: Tensor | list) -> list[tuple[int, int]]:
    shapes = spatial_shapes.tolist() if torch.is_tensor(spatial_shapes) else list(spatial_shapes)
    return [(int(h), int(w)) for h, w in shapes]


def multi_scale_deformable_attn(value: Tensor, spatial_shapes: Tensor | list,
                                sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """Multi-scale deformable attention (Deformable DETR) with ``grid_sample``.

    Args:
        value: ``[B, S, heads, C_h]``; ``S = sum_l h_l * w_l``, levels
            concatenated in order, each flattened row-major.
        spatial_shapes: ``[L, 2]`` (h, w) per level (tensor or list).
        sampling_locations: ``[B, Q, heads, L, P, 2]`` (x, y) in [0, 1].
        attention_weights: ``[B, Q, heads, L, P]`` (already normalised).

    Returns:
        ``[B, Q, heads * C_h]`` (head-major channels).
    """
    b, s, heads, ch = value.shape
    _, q, _, num_levels, num_points, _ = sampling_locations.shape
    shapes = _level_shapes(spatial_shapes)
    if len(shapes) != num_levels or sum(h * w for h, w in shapes) != s:
        raise ValueError(
            f"bevlm/models/bev/ms_deform_attn.py: spatial_shapes {shapes} do not match value "
            f"length {s} / {num_levels} sampling levels; the value must concatenate every level.")
    value_list = value.split([h * w for h, w in shapes], dim=1)
    grids = 2.0 * sampling_locations - 1.0
    samples = []
    for lvl, (h, w) in enumerate(shapes):
        v = value_list[lvl].flatten(2).transpose(1, 2).reshape(b * heads, ch, h, w)  # [B*heads, C_h, h, w]
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # [B*heads, Q, P, 2]
        samples.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros",
                                     align_corners=False))  # [B*heads, C_h, Q, P]
    sampled = torch.stack(samples, dim=-2).flatten(-2)  # [B*heads, C_h, Q, L*P]
    weights = attention_weights.transpose(1, 2).reshape(b * heads, 1, q, num_levels * num_points)
    out = (sampled * weights).sum(-1)  # [B*heads, C_h, Q]
    return out.view(b, heads * ch, q).transpose(1, 2).contiguous()  # [B, Q, heads*C_h]


def multi_scale_deformable_attn_reference(value: Tensor, spatial_shapes: Tensor | list,
                                          sampling_locations: Tensor,
                                          attention_weights: Tensor) -> Tensor:
    """Loop-based reference of :func:`multi_scale_deformable_attn` (slow; tests only).

    Bilinear interpolation written out: pixel coordinates
    ``u = x * w - 0.5``, ``v = y * h - 0.5``; the four neighbours outside the
    map contribute zero. Same arguments and result as the fast version.
    """
    b, s, heads, ch = value.shape
    _, q, _, num_levels, num_points, _ = sampling_locations.shape
    shapes = _level_shapes(spatial_shapes)
    starts = [0]
    for h, w in shapes[:-1]:
        starts.append(starts[-1] + h * w)
    out = value.new_zeros(b, q, heads, ch)
    for bi in range(b):
        for qi in range(q):
            for hi in range(heads):
                for li, (h, w) in enumerate(shapes):
                    for pi in range(num_points):
                        x, y = sampling_locations[bi, qi, hi, li, pi].tolist()
                        u, v = x * w - 0.5, y * h - 0.5
                        u0, v0 = math.floor(u), math.floor(v)
                        acc = value.new_zeros(ch)
                        for dv in (0, 1):
                            for du in (0, 1):
                                uu, vv = u0 + du, v0 + dv
                                if not (0 <= uu < w and 0 <= vv < h):
                                    continue
                                wgt = (1 - abs(u - uu)) * (1 - abs(v - vv))
                                acc = acc + wgt * value[bi, starts[li] + vv * w + uu, hi]
                        out[bi, qi, hi] += attention_weights[bi, qi, hi, li, pi] * acc
    return out.reshape(b, q, heads * ch)  # [B, Q, heads*C_h]


def init_sampling_offsets(linear: torch.nn.Linear, num_heads: int, num_groups: int,
                          num_points: int) -> None:
    """Deformable DETR initialisation of a sampling-offset projection.

    Weights are zeroed and the bias places the ``num_points`` points of head
    ``h`` along the direction ``2 * pi * h / num_heads`` at distances 1..P
    (in units of cells of the sampled level), identically for each group.

    Args:
        linear: projection whose output is laid out ``[heads, num_groups, P, 2]``
            (groups are levels, or levels x z-anchors, or queue x levels).
        num_heads: attention heads.
        num_groups: groups per head.
        num_points: points per group.
    """
    expected = num_heads * num_groups * num_points * 2
    if linear.out_features != expected:
        raise ValueError(f"bevlm/models/bev/ms_deform_attn.py: offset projection has "
                         f"{linear.out_features} outputs, expected {expected}.")
    thetas = torch.arange(num_heads, dtype=torch.float32) * (2.0 * math.pi / num_heads)
    grid = torch.stack([thetas.cos(), thetas.sin()], dim=-1)  # [heads, 2]
    grid = grid / grid.abs().max(-1, keepdim=True).values
    grid = grid.view(num_heads, 1, 1, 2).repeat(1, num_groups, num_points, 1)  # [heads, G, P, 2]
    grid = grid * torch.arange(1, num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.copy_(grid.reshape(-1))

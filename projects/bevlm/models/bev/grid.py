"""The one definition of the BEV grid used by the whole package.

Convention (ego frame: x forward, y left, z up, metres; see
:mod:`bevlm.structures.cameras`). ``pc_range = (x_min, y_min, z_min, x_max,
y_max, z_max)``. The BEV map has ``bev_h`` rows and ``bev_w`` columns and is
drawn as seen from above with the ego heading pointing *up* the image:

* row ``i`` (0 .. bev_h-1) <-> x, from far-forward (``x_max``, row 0) to the
  back (``x_min``, last row): ``x = x_max - (i + 0.5) * dx``,
  ``dx = (x_max - x_min) / bev_h``;
* column ``j`` (0 .. bev_w-1) <-> y, from the left (``y_max``, column 0) to the
  right (``y_min``, last column): ``y = y_max - (j + 0.5) * dy``,
  ``dy = (y_max - y_min) / bev_w``.

Continuous indices put cell centres at integer values, so
``ego_xy_to_bev_ij(...).round()`` gives the cell that contains a point.
Flattened BEV tokens ``[B, bev_h * bev_w, C]`` are row-major: token
``q = i * bev_w + j``; :func:`bev_tokens_to_map` / :func:`bev_map_to_tokens`
convert to and from ``[B, C, bev_h, bev_w]``. Images of the map
(``plt.imshow(map[c])``) therefore show forward up and left on the left.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

PcRange = Sequence[float]


def _check_pc_range(pc_range: PcRange) -> tuple[float, ...]:
    if len(pc_range) != 6:
        raise ValueError(
            f"bevlm/models/bev/grid.py: pc_range must be (x_min, y_min, z_min, x_max, y_max, z_max), "
            f"got {tuple(pc_range)}; fix the `pc_range` key of the model config.")
    r = tuple(float(v) for v in pc_range)
    if not (r[3] > r[0] and r[4] > r[1] and r[5] > r[2]):
        raise ValueError(
            f"bevlm/models/bev/grid.py: pc_range {r} needs max > min on every axis; "
            "fix the `pc_range` key of the model config.")
    return r


def bev_cell_size(bev_h: int, bev_w: int, pc_range: PcRange) -> tuple[float, float]:
    """Size of one BEV cell.

    Returns:
        ``(dx, dy)`` in metres: extent of a row along x and of a column along y.
    """
    r = _check_pc_range(pc_range)
    return (r[3] - r[0]) / bev_h, (r[4] - r[1]) / bev_w


def bev_ij_to_ego_xy(ij: Tensor, bev_h: int, bev_w: int, pc_range: PcRange) -> Tensor:
    """Continuous (row, column) indices -> ego-frame (x, y) metres.

    Args:
        ij: ``[..., 2]`` (i, j); integers are cell centres.
        bev_h, bev_w: grid size.
        pc_range: see module docstring.

    Returns:
        ``[..., 2]`` (x, y).
    """
    r = _check_pc_range(pc_range)
    dx, dy = bev_cell_size(bev_h, bev_w, r)
    x = r[3] - (ij[..., 0] + 0.5) * dx
    y = r[4] - (ij[..., 1] + 0.5) * dy
    return torch.stack([x, y], dim=-1)


def ego_xy_to_bev_ij(xy: Tensor, bev_h: int, bev_w: int, pc_range: PcRange) -> Tensor:
    """Ego-frame (x, y) metres -> continuous (row, column) indices.

    Inverse of :func:`bev_ij_to_ego_xy`. Points outside ``pc_range`` give
    indices outside ``[-0.5, bev_h - 0.5) x [-0.5, bev_w - 0.5)``.

    Args:
        xy: ``[..., 2]`` (x, y).

    Returns:
        ``[..., 2]`` float (i, j); ``.round().long()`` is the containing cell.
    """
    r = _check_pc_range(pc_range)
    dx, dy = bev_cell_size(bev_h, bev_w, r)
    i = (r[3] - xy[..., 0]) / dx - 0.5
    j = (r[4] - xy[..., 1]) / dy - 0.5
    return torch.stack([i, j], dim=-1)


def ego_xy_to_grid_sample(xy: Tensor, pc_range: PcRange) -> Tensor:
    """Ego (x, y) -> ``F.grid_sample`` coordinates on a ``[B, C, bev_h, bev_w]`` map.

    For ``align_corners=False``: grid x (width axis) follows the column j,
    grid y (height axis) follows the row i; the map border is +-1.

    Args:
        xy: ``[..., 2]`` ego (x, y) metres.

    Returns:
        ``[..., 2]`` (gx, gy) in [-1, 1] inside ``pc_range``.
    """
    r = _check_pc_range(pc_range)
    gx = (r[4] - xy[..., 1]) / (r[4] - r[1]) * 2.0 - 1.0
    gy = (r[3] - xy[..., 0]) / (r[3] - r[0]) * 2.0 - 1.0
    return torch.stack([gx, gy], dim=-1)


def bev_grid_xy(bev_h: int, bev_w: int, pc_range: PcRange,
                device: torch.device | str | None = None) -> Tensor:
    """Ego-frame centres of all BEV cells.

    Args:
        bev_h, bev_w: grid size.
        pc_range: see module docstring.
        device: where to create the tensor.

    Returns:
        ``[bev_h, bev_w, 2]`` float32 (x, y); ``[i, j]`` is the centre of cell (i, j).
    """
    ii, jj = torch.meshgrid(torch.arange(bev_h, dtype=torch.float32, device=device),
                            torch.arange(bev_w, dtype=torch.float32, device=device),
                            indexing="ij")
    return bev_ij_to_ego_xy(torch.stack([ii, jj], dim=-1), bev_h, bev_w, pc_range)


def bev_grid_normalized(bev_h: int, bev_w: int,
                        device: torch.device | str | None = None) -> Tensor:
    """Cell centres as deformable-attention sampling locations on the BEV map.

    Returns:
        ``[bev_h * bev_w, 2]`` ((j + 0.5) / bev_w, (i + 0.5) / bev_h) in (0, 1),
        row-major, i.e. (x, y) = (column, row) as Deformable DETR expects.
    """
    ii, jj = torch.meshgrid(torch.arange(bev_h, dtype=torch.float32, device=device),
                            torch.arange(bev_w, dtype=torch.float32, device=device),
                            indexing="ij")
    ref = torch.stack([(jj + 0.5) / bev_w, (ii + 0.5) / bev_h], dim=-1)  # [Hb, Wb, 2]
    return ref.reshape(bev_h * bev_w, 2)  # [Hb*Wb, 2]


def bev_tokens_to_map(bev: Tensor, bev_h: int, bev_w: int) -> Tensor:
    """``[B, bev_h * bev_w, C]`` tokens -> ``[B, C, bev_h, bev_w]`` map."""
    b, q, c = bev.shape
    if q != bev_h * bev_w:
        raise ValueError(f"bevlm/models/bev/grid.py: BEV has {q} tokens, expected "
                         f"bev_h * bev_w = {bev_h} * {bev_w}; check bev_h/bev_w in the config.")
    return bev.reshape(b, bev_h, bev_w, c).permute(0, 3, 1, 2)  # [B, C, Hb, Wb]


def bev_map_to_tokens(bev_map: Tensor) -> Tensor:
    """``[B, C, bev_h, bev_w]`` map -> ``[B, bev_h * bev_w, C]`` row-major tokens."""
    return bev_map.flatten(2).transpose(1, 2)  # [B, Hb*Wb, C]

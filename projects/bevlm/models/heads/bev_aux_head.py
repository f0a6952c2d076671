"""Auxiliary BEV head: object-centre heatmaps and an occupancy map.

Gives the BEV encoder a dense geometric training signal next to the language
loss. The heatmap branch follows CenterPoint (Yin et al., "Center-based 3D
Object Detection and Tracking", CVPR 2021): one Gaussian per object centre
and class, radius from the CornerNet rule (Law & Deng, ECCV 2018), trained
with the penalty-reduced focal loss. The occupancy branch marks the cells
whose centre lies inside any ground-truth box footprint (binary
cross-entropy); its sigmoid is also a per-token saliency score for BEV token
pruning (:meth:`BEVAuxHead.occupancy_score`).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bevlm.models.bev.grid import bev_cell_size, bev_grid_xy, bev_tokens_to_map, ego_xy_to_bev_ij
from bevlm.registry import MODELS


def gaussian_radius(length_cells: float, width_cells: float, min_overlap: float) -> float:
    """CornerNet / CenterPoint Gaussian radius (in cells) for a box footprint.

    The largest corner shift that keeps IoU >= ``min_overlap``, min over the
    three cases of CornerNet.
    """
    h, w = length_cells, width_cells
    b1, c1 = h + w, w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(max(b1 ** 2 - 4 * c1, 0.0))) / 2
    b2, c2 = 2 * (h + w), (1 - min_overlap) * w * h
    r2 = (b2 + math.sqrt(max(b2 ** 2 - 16 * c2, 0.0))) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (h + w), (min_overlap - 1) * w * h
    r3 = (b3 + math.sqrt(max(b3 ** 2 - 4 * a3 * c3, 0.0))) / 2
    return min(r1, r2, r3)


def gaussian_focal_loss(logits: Tensor, target: Tensor, alpha: float = 2.0,
                        gamma: float = 4.0) -> Tensor:
    """Penalty-reduced pixel-wise focal loss (CornerNet / CenterPoint).

    Args:
        logits: ``[B, K, H, W]`` heatmap logits.
        target: ``[B, K, H, W]`` Gaussian targets in [0, 1], peaks exactly 1.
        alpha, gamma: focusing exponents on the prediction and on ``1 - target``.

    Returns:
        scalar: summed loss divided by max(number of peaks, 1).
    """
    pred = logits.sigmoid().clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).to(pred.dtype)
    pos_loss = -pred.log() * (1 - pred).pow(alpha) * pos
    neg_loss = -(1 - pred).log() * pred.pow(alpha) * (1 - target).pow(gamma) * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1.0)


@MODELS.register_module()
class BEVAuxHead(nn.Module):
    """Small conv head on the BEV map: centre heatmaps + occupancy.

    Args:
        embed_dims: BEV channels C.
        num_classes: heatmap classes K (labels outside [0, K) are ignored).
        bev_h, bev_w, pc_range: the BEV grid (:mod:`bevlm.models.bev.grid`).
        loss_heatmap_weight: weight of the focal heatmap loss.
        loss_occ_weight: weight of the occupancy BCE loss.
        hidden_dims: channels of the shared conv.
        min_radius: smallest Gaussian radius in cells.
        gaussian_overlap: IoU of the CornerNet radius rule.
    """

    def __init__(self, embed_dims: int, num_classes: int, bev_h: int, bev_w: int,
                 pc_range: Sequence[float], loss_heatmap_weight: float = 1.0,
                 loss_occ_weight: float = 1.0, hidden_dims: int = 64, min_radius: int = 1,
                 gaussian_overlap: float = 0.1) -> None:
        super().__init__()
        self.num_classes, self.bev_h, self.bev_w = num_classes, bev_h, bev_w
        self.pc_range = tuple(float(v) for v in pc_range)
        self.loss_heatmap_weight, self.loss_occ_weight = loss_heatmap_weight, loss_occ_weight
        self.min_radius, self.gaussian_overlap = min_radius, gaussian_overlap
        self.shared = nn.Sequential(nn.Conv2d(embed_dims, hidden_dims, 3, padding=1),
                                    nn.ReLU(inplace=True))
        self.heatmap = nn.Sequential(nn.Conv2d(hidden_dims, hidden_dims, 3, padding=1),
                                     nn.ReLU(inplace=True), nn.Conv2d(hidden_dims, num_classes, 1))
        self.occupancy = nn.Conv2d(hidden_dims, 1, 1)
        nn.init.constant_(self.heatmap[-1].bias, -2.19)  # sigmoid ~ 0.1 prior (CenterPoint)
        self.register_buffer("cell_xy", bev_grid_xy(bev_h, bev_w, self.pc_range), persistent=False)

    def forward(self, bev: Tensor) -> dict[str, Tensor]:
        """Args: bev ``[B, bev_h * bev_w, C]``.

        Returns:
            dict with ``heatmap`` ``[B, K, Hb, Wb]`` and ``occupancy``
            ``[B, 1, Hb, Wb]``, both logits (apply sigmoid for probabilities).
        """
        x = self.shared(bev_tokens_to_map(bev, self.bev_h, self.bev_w))  # [B, hidden, Hb, Wb]
        return dict(heatmap=self.heatmap(x), occupancy=self.occupancy(x))

    def occupancy_score(self, bev: Tensor) -> Tensor:
        """Predicted occupancy probability of every BEV token.

        Args: bev ``[B, bev_h * bev_w, C]``. Returns: ``[B, bev_h * bev_w]`` in [0, 1].
        """
        x = self.shared(bev_tokens_to_map(bev, self.bev_h, self.bev_w))
        return self.occupancy(x).sigmoid().flatten(1)  # [B, Hb*Wb]

    def _targets_one(self, boxes: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Targets of one sample: heatmap ``[K, Hb, Wb]``, occupancy ``[1, Hb, Wb]``."""
        hb, wb = self.bev_h, self.bev_w
        device = self.cell_xy.device
        heat = torch.zeros(self.num_classes, hb, wb, device=device)
        occ = torch.zeros(1, hb, wb, device=device)
        if boxes.numel() == 0:
            return heat, occ
        if boxes.dim() != 2 or boxes.shape[1] < 7 or labels.shape[0] != boxes.shape[0]:
            raise ValueError(f"BEVAuxHead: gt_boxes must be [M, >=7] (x, y, z, l, w, h, yaw, ...) with "
                             f"[M] gt_labels, got {tuple(boxes.shape)} and {tuple(labels.shape)}; check "
                             "the dataset's `gt_boxes`/`gt_labels`.")
        boxes = boxes.to(device=device, dtype=torch.float32)
        labels = labels.to(device)
        dx, dy = bev_cell_size(hb, wb, self.pc_range)
        ii = torch.arange(hb, device=device, dtype=torch.float32).view(hb, 1)
        jj = torch.arange(wb, device=device, dtype=torch.float32).view(1, wb)
        centres = ego_xy_to_bev_ij(boxes[:, :2], hb, wb, self.pc_range).round().long()  # [M, 2]
        for box, label, (ci, cj) in zip(boxes, labels.tolist(), centres.tolist()):
            x, y, _, length, width, _, yaw = box[:7].tolist()
            # Occupancy: cell centres inside the rotated footprint.
            rel = self.cell_xy - self.cell_xy.new_tensor([x, y])  # [Hb, Wb, 2]
            cos, sin = math.cos(yaw), math.sin(yaw)
            along = rel[..., 0] * cos + rel[..., 1] * sin
            across = -rel[..., 0] * sin + rel[..., 1] * cos
            occ[0] = torch.maximum(occ[0], ((along.abs() <= length / 2)
                                            & (across.abs() <= width / 2)).float())
            if not (0 <= ci < hb and 0 <= cj < wb):
                continue
            occ[0, ci, cj] = 1.0  # boxes smaller than a cell still occupy their centre cell
            if not 0 <= label < self.num_classes:
                continue
            radius = max(self.min_radius, int(gaussian_radius(length / dx, width / dy,
                                                              self.gaussian_overlap)))
            sigma = (2 * radius + 1) / 6.0
            d2 = (ii - ci) ** 2 + (jj - cj) ** 2  # [Hb, Wb]
            g = torch.exp(-d2 / (2 * sigma ** 2))
            g = g * (((ii - ci).abs() <= radius) & ((jj - cj).abs() <= radius)).float()
            g = torch.where(g < torch.finfo(g.dtype).eps, torch.zeros_like(g), g)
            heat[label] = torch.maximum(heat[label], g)
        return heat, occ

    def build_targets(self, gt_boxes: list[Tensor], gt_labels: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Dense targets for a batch.

        Args:
            gt_boxes: per sample ``[M, >=7]`` (x, y, z, l, w, h, yaw, ...) in the
                ego frame (l along the heading ``yaw``, counter-clockwise from x).
            gt_labels: per sample ``[M]`` class indices.

        Returns:
            heatmap ``[B, K, Hb, Wb]`` (peak exactly 1 at each centre cell) and
            occupancy ``[B, 1, Hb, Wb]`` in {0, 1}.
        """
        if len(gt_boxes) != len(gt_labels):
            raise ValueError("BEVAuxHead: gt_boxes and gt_labels must have one entry per sample.")
        pairs = [self._targets_one(b, l) for b, l in zip(gt_boxes, gt_labels)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def loss(self, preds: dict[str, Tensor], gt_boxes: list[Tensor],
             gt_labels: list[Tensor]) -> dict[str, Tensor]:
        """Weighted heatmap focal loss and occupancy BCE.

        Args:
            preds: output of :meth:`forward`.
            gt_boxes, gt_labels: see :meth:`build_targets`.

        Returns:
            dict(loss_heatmap=scalar, loss_occ=scalar).
        """
        heat_t, occ_t = self.build_targets(gt_boxes, gt_labels)
        heat_t = heat_t.to(preds["heatmap"].dtype)
        occ_t = occ_t.to(preds["occupancy"].dtype)
        loss_heatmap = gaussian_focal_loss(preds["heatmap"], heat_t)
        loss_occ = F.binary_cross_entropy_with_logits(preds["occupancy"], occ_t)
        return dict(loss_heatmap=self.loss_heatmap_weight * loss_heatmap,
                    loss_occ=self.loss_occ_weight * loss_occ)

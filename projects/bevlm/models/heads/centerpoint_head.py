"""CenterPoint-style 3D detection head on the BEV tokens.

CenterPoint (Yin et al., "Center-based 3D Object Detection and Tracking", CVPR
2021), as used on camera BEV features by BEVFormer / BEVDet: a per-class
centre heatmap (one Gaussian per object, CornerNet radius, penalty-reduced
focal loss; :func:`bevlm.models.heads.bev_aux_head.gaussian_radius` and
:func:`~bevlm.models.heads.bev_aux_head.gaussian_focal_loss`) and a box
regression read at the centre cells. The 10 regression channels are

    [di, dj]  sub-cell offset of the centre (continuous BEV index - cell index)
    [z]       centre height (m, ego frame)
    [log l, log w, log h]
    [sin yaw, cos yaw]
    [vx, vy]  velocity (m/s, ego frame)

trained with an L1 loss on the ground-truth centre cells only. Decoding keeps
the local maxima of the heatmap (3x3 max-pool NMS), the top-K over classes and
cells, and the scores above a threshold; boxes come back in the ego frame as
``(x, y, z, l, w, h, yaw, vx, vy)`` (the layout of ``DriveDataSample.gt_boxes``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bevlm.models.bev.grid import bev_cell_size, bev_ij_to_ego_xy, bev_tokens_to_map, ego_xy_to_bev_ij
from bevlm.registry import MODELS

from .bev_aux_head import gaussian_focal_loss, gaussian_radius

#: Regression branches and their channels, in the order of the 10-channel code.
REG_BRANCHES = (("offset", 2), ("height", 1), ("dim", 3), ("rot", 2), ("vel", 2))
CODE_SIZE = sum(c for _, c in REG_BRANCHES)


def draw_gaussian(heat: Tensor, ci: int, cj: int, radius: int) -> None:
    """Max-merge a CenterNet Gaussian peak (value 1 at ``(ci, cj)``) into ``heat`` in place.

    Args:
        heat: ``[H, W]`` map of one class.
        ci, cj: centre cell (row, column), inside the map.
        radius: half size of the square support in cells; sigma = (2 r + 1) / 6.
    """
    h, w = heat.shape
    sigma = (2 * radius + 1) / 6.0
    ii = torch.arange(h, device=heat.device, dtype=heat.dtype).view(h, 1) - ci
    jj = torch.arange(w, device=heat.device, dtype=heat.dtype).view(1, w) - cj
    g = torch.exp(-(ii ** 2 + jj ** 2) / (2 * sigma ** 2))  # [H, W]
    g = g * ((ii.abs() <= radius) & (jj.abs() <= radius)).to(g.dtype)
    g = torch.where(g < torch.finfo(g.dtype).eps, torch.zeros_like(g), g)
    torch.maximum(heat, g, out=heat)


def _branch(in_dims: int, hidden_dims: int, out_dims: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_dims, hidden_dims, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(hidden_dims, out_dims, 1))


@MODELS.register_module()
class CenterPointHead(nn.Module):
    """Centre heatmap + box regression on BEV tokens ``[B, Hb*Wb, C]``.

    Args:
        embed_dims: BEV channels C.
        num_classes: heatmap classes K; labels outside [0, K) are ignored (e.g. the
            mini world's ``traffic_light``, index 10, with K = 10).
        bev_h, bev_w, pc_range: the BEV grid (:mod:`bevlm.models.bev.grid`).
        hidden_dims: channels of the shared conv and of every branch.
        min_radius: smallest Gaussian radius (cells).
        gaussian_overlap: IoU of the CornerNet radius rule.
        loss_heatmap_weight: weight of the focal heatmap loss.
        loss_bbox_weight: weight of the L1 box loss (CenterPoint: 0.25).
        code_weights: per-channel L1 weights of the 10-channel code (CenterPoint: 0.2 on
            the velocity).
        max_num: top-K boxes kept per sample at decoding.
        score_threshold: boxes below this score are dropped at decoding.
        nms_kernel: max-pool kernel of the heatmap NMS (odd).
    """

    def __init__(self, embed_dims: int, num_classes: int, bev_h: int, bev_w: int,
                 pc_range: Sequence[float], hidden_dims: int = 64, min_radius: int = 1,
                 gaussian_overlap: float = 0.1, loss_heatmap_weight: float = 1.0,
                 loss_bbox_weight: float = 0.25,
                 code_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2, 0.2),
                 max_num: int = 100, score_threshold: float = 0.1, nms_kernel: int = 3) -> None:
        super().__init__()
        if len(code_weights) != CODE_SIZE:
            raise ValueError(f"CenterPointHead: code_weights has {len(code_weights)} values, the code has "
                             f"{CODE_SIZE} (offset 2, z 1, log size 3, sin/cos 2, velocity 2); fix "
                             "`code_weights` in the head config.")
        if nms_kernel < 1 or nms_kernel % 2 == 0:
            raise ValueError(f"CenterPointHead: nms_kernel={nms_kernel} must be a positive odd number.")
        self.num_classes, self.bev_h, self.bev_w = num_classes, bev_h, bev_w
        self.pc_range = tuple(float(v) for v in pc_range)
        self.min_radius, self.gaussian_overlap = int(min_radius), float(gaussian_overlap)
        self.loss_heatmap_weight, self.loss_bbox_weight = loss_heatmap_weight, loss_bbox_weight
        self.max_num, self.score_threshold, self.nms_kernel = int(max_num), float(score_threshold), nms_kernel
        self.register_buffer("code_weights", torch.tensor(code_weights, dtype=torch.float32),
                             persistent=False)
        self.shared = nn.Sequential(nn.Conv2d(embed_dims, hidden_dims, 3, padding=1),
                                    nn.ReLU(inplace=True))
        self.heatmap = _branch(hidden_dims, hidden_dims, num_classes)
        nn.init.constant_(self.heatmap[-1].bias, -2.19)  # sigmoid ~ 0.1 prior (CenterPoint)
        self.branches = nn.ModuleDict({name: _branch(hidden_dims, hidden_dims, c) for name, c in REG_BRANCHES})

    def forward(self, bev: Tensor) -> dict[str, Tensor]:
        """Args: bev ``[B, bev_h * bev_w, C]``.

        Returns:
            dict with ``heatmap`` ``[B, K, Hb, Wb]`` (logits) and ``reg`` ``[B, 10, Hb, Wb]``.
        """
        x = self.shared(bev_tokens_to_map(bev, self.bev_h, self.bev_w))  # [B, hidden, Hb, Wb]
        reg = torch.cat([self.branches[name](x) for name, _ in REG_BRANCHES], dim=1)  # [B, 10, Hb, Wb]
        return dict(heatmap=self.heatmap(x), reg=reg)

    # ------------------------------------------------------------------ targets
    def encode_boxes(self, boxes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Ego boxes -> (centre cells, 10-channel codes, in-grid mask).

        Args:
            boxes: ``[M, 9]`` (x, y, z, l, w, h, yaw, vx, vy); ``[M, 7]`` gets zero velocity.

        Returns:
            cells ``[M, 2]`` long (row, column), codes ``[M, 10]``, inside ``[M]`` bool.
        """
        if boxes.dim() != 2 or boxes.shape[1] < 7:
            raise ValueError(f"CenterPointHead: gt_boxes must be [M, 9] (x, y, z, l, w, h, yaw, vx, vy), got "
                             f"{tuple(boxes.shape)}; check the dataset's `gt_boxes` (PackDriveInputs).")
        if boxes.shape[1] < 9:
            boxes = torch.cat([boxes[:, :7], boxes.new_zeros(boxes.shape[0], 2)], dim=1)
        ij = ego_xy_to_bev_ij(boxes[:, :2], self.bev_h, self.bev_w, self.pc_range)  # [M, 2] continuous
        cells = ij.round().long()
        inside = ((cells[:, 0] >= 0) & (cells[:, 0] < self.bev_h)
                  & (cells[:, 1] >= 0) & (cells[:, 1] < self.bev_w))
        codes = torch.cat([ij - cells.to(ij.dtype), boxes[:, 2:3], boxes[:, 3:6].clamp(min=1e-3).log(),
                           boxes[:, 6:7].sin(), boxes[:, 6:7].cos(), boxes[:, 7:9]], dim=1)  # [M, 10]
        return cells, codes, inside

    def build_targets(self, gt_boxes: list[Tensor], gt_labels: list[Tensor]) -> dict[str, Tensor]:
        """Dense heatmap and sparse regression targets of a batch.

        Args:
            gt_boxes: per sample ``[M, 9]`` ego boxes (see :meth:`encode_boxes`).
            gt_labels: per sample ``[M]`` class indices.

        Returns:
            dict with ``heatmap`` ``[B, K, Hb, Wb]`` (peaks exactly 1), ``index`` ``[B, P]``
            (flattened centre cell ``i * Wb + j``), ``code`` ``[B, P, 10]`` and ``mask``
            ``[B, P]`` (real entries; P = the most objects of one sample, at least 1).
        """
        if len(gt_boxes) != len(gt_labels):
            raise ValueError("CenterPointHead: gt_boxes and gt_labels need one entry per sample.")
        device = self.code_weights.device
        dx, dy = bev_cell_size(self.bev_h, self.bev_w, self.pc_range)
        b = len(gt_boxes)
        heat = torch.zeros(b, self.num_classes, self.bev_h, self.bev_w, device=device)
        per_sample = []
        for s, (boxes, labels) in enumerate(zip(gt_boxes, gt_labels)):
            boxes = boxes.to(device=device, dtype=torch.float32)
            if boxes.numel() == 0:
                boxes = boxes.reshape(0, 9)
            labels = labels.to(device).reshape(-1).long()
            if labels.shape[0] != boxes.shape[0]:
                raise ValueError(f"CenterPointHead: sample {s} has {boxes.shape[0]} gt_boxes but "
                                 f"{labels.shape[0]} gt_labels; check the dataset's instances.")
            cells, codes, inside = self.encode_boxes(boxes)
            keep = inside & (labels >= 0) & (labels < self.num_classes)
            cells, codes, labels, boxes = cells[keep], codes[keep], labels[keep], boxes[keep]
            for (ci, cj), label, box in zip(cells.tolist(), labels.tolist(), boxes.tolist()):
                radius = max(self.min_radius, int(gaussian_radius(box[3] / dx, box[4] / dy,
                                                                  self.gaussian_overlap)))
                draw_gaussian(heat[s, label], ci, cj, radius)
            per_sample.append((cells[:, 0] * self.bev_w + cells[:, 1], codes))
        p = max([1] + [idx.numel() for idx, _ in per_sample])
        index = torch.zeros(b, p, dtype=torch.long, device=device)
        code = torch.zeros(b, p, CODE_SIZE, device=device)
        mask = torch.zeros(b, p, dtype=torch.bool, device=device)
        for s, (idx, c) in enumerate(per_sample):
            index[s, :idx.numel()], code[s, :idx.numel()], mask[s, :idx.numel()] = idx, c, True
        return dict(heatmap=heat, index=index, code=code, mask=mask)

    def loss(self, preds: dict[str, Tensor], gt_boxes: list[Tensor],
             gt_labels: list[Tensor]) -> dict[str, Tensor]:
        """Focal heatmap loss + weighted L1 box loss at the centre cells.

        Args:
            preds: output of :meth:`forward`.
            gt_boxes, gt_labels: see :meth:`build_targets`.

        Returns:
            dict(loss_det_heatmap=scalar, loss_det_bbox=scalar).
        """
        t = self.build_targets(gt_boxes, gt_labels)
        heat_logits, reg = preds["heatmap"], preds["reg"]
        loss_heatmap = gaussian_focal_loss(heat_logits, t["heatmap"].to(heat_logits.dtype))
        flat = reg.flatten(2).transpose(1, 2)  # [B, Hb*Wb, 10]
        pred = flat.gather(1, t["index"].unsqueeze(-1).expand(-1, -1, CODE_SIZE))  # [B, P, 10]
        mask = t["mask"].unsqueeze(-1).to(pred.dtype)  # [B, P, 1]
        l1 = (pred - t["code"].to(pred.dtype)).abs() * self.code_weights.to(pred.dtype) * mask
        loss_bbox = l1.sum() / mask.sum().clamp(min=1.0)
        return dict(loss_det_heatmap=self.loss_heatmap_weight * loss_heatmap,
                    loss_det_bbox=self.loss_bbox_weight * loss_bbox)

    # ------------------------------------------------------------------ decoding
    def decode_codes(self, cells: Tensor, codes: Tensor) -> Tensor:
        """Inverse of :meth:`encode_boxes`: centre cells + codes -> ego boxes.

        Args:
            cells: ``[..., 2]`` (row, column) cell indices.
            codes: ``[..., 10]`` regression codes.

        Returns:
            ``[..., 9]`` (x, y, z, l, w, h, yaw, vx, vy).
        """
        ij = cells.to(codes.dtype) + codes[..., 0:2]
        xy = bev_ij_to_ego_xy(ij, self.bev_h, self.bev_w, self.pc_range)
        yaw = torch.atan2(codes[..., 6:7], codes[..., 7:8])
        return torch.cat([xy, codes[..., 2:3], codes[..., 3:6].exp(), yaw, codes[..., 8:10]], dim=-1)

    @torch.no_grad()
    def predict(self, preds: dict[str, Tensor]) -> list[dict[str, Tensor]]:
        """Boxes of every sample: heatmap NMS, top-K, score threshold.

        Args:
            preds: output of :meth:`forward`.

        Returns:
            per sample dict(``bboxes_3d`` ``[n, 9]`` ego boxes, ``scores_3d`` ``[n]``,
            ``labels_3d`` ``[n]`` long), sorted by decreasing score.
        """
        heat = preds["heatmap"].sigmoid()  # [B, K, Hb, Wb]
        b, k, hb, wb = heat.shape
        hmax = F.max_pool2d(heat, self.nms_kernel, stride=1, padding=self.nms_kernel // 2)
        heat = heat * (hmax == heat).to(heat.dtype)  # local maxima only
        topk = min(self.max_num, k * hb * wb)
        scores, idx = heat.flatten(1).topk(topk, dim=1)  # [B, topk]
        labels, cell = idx // (hb * wb), idx % (hb * wb)
        cells = torch.stack([cell // wb, cell % wb], dim=-1)  # [B, topk, 2]
        reg = preds["reg"].flatten(2).transpose(1, 2)  # [B, Hb*Wb, 10]
        codes = reg.gather(1, cell.unsqueeze(-1).expand(-1, -1, CODE_SIZE))  # [B, topk, 10]
        boxes = self.decode_codes(cells, codes.float())  # [B, topk, 9]
        out = []
        for s in range(b):
            keep = scores[s] > self.score_threshold
            out.append(dict(bboxes_3d=boxes[s, keep], scores_3d=scores[s, keep], labels_3d=labels[s, keep]))
        return out

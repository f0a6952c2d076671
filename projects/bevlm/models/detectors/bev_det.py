"""BEVDet: the stage-1 perception model, multi-view images -> BEVFormer-lite -> 3D boxes, no LLM."""
from __future__ import annotations

import torch
from mmengine.model import BaseModel

from bevlm.registry import MODELS
from ..bev.multiview_encoder import encode_bev_queue, extract_multiview_feats


@MODELS.register_module()
class BEVDet(BaseModel):
    """Camera-only 3D detector on the BEV of BEVFormer-lite (perception pretraining).

    The BEV encoder of BEVFormer (Li et al., ECCV 2022) with a CenterPoint head (Yin et al.,
    CVPR 2021), as in BEVFormer's detection setting but with a dense centre head instead of
    the DETR decoder. The image and BEV code paths are those of
    :mod:`bevlm.models.bev.multiview_encoder`, and the module names (``img_backbone``,
    ``img_neck``, ``bev_encoder``, ``aux_head``) are those of ``BEVVLM``, so a stage-2 BEV-VLM
    can ``load_from`` this model's checkpoint (the ``det_head`` keys are then unexpected and
    ignored, the LLM side is missing and initialised as usual).

    Args:
        img_backbone, img_neck: image feature extractor (e.g. ``TimmBackbone`` + ``FPNLite``).
        bev_encoder: config of :class:`BEVFormerLiteEncoder`.
        det_head: config of :class:`CenterPointHead`.
        aux_head: optional :class:`BEVAuxHead` (centre heatmap + occupancy) trained next to the
            detector, so that the BEV-VLM's token pruning score is pretrained too.
        min_gt_pts: the detection head trains on boxes with at least this many lidar points
            (``gt_num_pts``; the mini world counts visible pixels), as mmdet3d's ``use_valid_flag``:
            the nuScenes metric ignores boxes with none. Unknown counts (-1) are kept; 0 keeps all.
            The auxiliary head sees every box, as in ``BEVVLM``.
        data_preprocessor: config of :class:`BEVVLMDataPreprocessor`.
        init_cfg: mmengine init config.
    """

    def __init__(self, img_backbone: dict, bev_encoder: dict, det_head: dict, img_neck: dict | None = None,
                 aux_head: dict | None = None, min_gt_pts: int = 1, data_preprocessor: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(type="BEVVLMDataPreprocessor")
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.img_backbone = MODELS.build(img_backbone)
        self.img_neck = MODELS.build(img_neck) if img_neck else None
        self.bev_encoder = MODELS.build(bev_encoder)
        self.det_head = MODELS.build(det_head)
        self.aux_head = MODELS.build(aux_head) if aux_head else None
        self.min_gt_pts = int(min_gt_pts)
        for name, head in (("det_head", self.det_head), ("aux_head", self.aux_head)):
            if head is not None and (head.bev_h, head.bev_w) != (self.bev_encoder.bev_h, self.bev_encoder.bev_w):
                raise ValueError(f"BEVDet: {name} grid {head.bev_h}x{head.bev_w} differs from the encoder's "
                                 f"{self.bev_encoder.bev_h}x{self.bev_encoder.bev_w}; set the same bev_h/bev_w "
                                 f"in model.{name} and model.bev_encoder.")

    # ------------------------------------------------------------------ vision
    def extract_img_feats(self, imgs: torch.Tensor) -> list[torch.Tensor]:
        """``imgs [B, N, 3, H, W]`` -> multi-level features, each ``[B, N, C, h, w]``."""
        return extract_multiview_feats(self.img_backbone, self.img_neck, imgs)

    def _frame_bev(self, imgs_t, ego2img_t, img_shape, prev_bev, motion) -> torch.Tensor:
        return self.bev_encoder(self.extract_img_feats(imgs_t), ego2img_t, img_shape,
                                prev_bev=prev_bev, ego_motion=motion)

    def encode_bev(self, imgs: torch.Tensor, data_samples: list) -> torch.Tensor:
        """BEV ``[B, Hb*Wb, C]`` of the last frame of ``imgs [B, T, N, 3, H, W]`` (history under no_grad)."""
        return encode_bev_queue(self._frame_bev, imgs, data_samples)

    # ------------------------------------------------------------------ modes
    def forward(self, inputs: dict, data_samples: list | None = None, mode: str = "tensor"):
        """Args: inputs ``{"imgs": [B, T, N, 3, H, W]}``; data_samples: B ``DriveDataSample``.

        Returns:
            ``loss``: dict of losses; ``predict``: the data samples with ``pred_instances_3d``
            (``bboxes_3d [n, 9]`` ego boxes (x, y, z, l, w, h, yaw, vx, vy), ``scores_3d``,
            ``labels_3d``); ``tensor``: the head outputs (``heatmap``, ``reg``) and ``bev``.
        """
        if data_samples is None:
            raise ValueError("BEVDet needs data_samples (camera calibration ego2img, temporal queue).")
        imgs = inputs["imgs"]
        if mode == "loss":
            return self.loss(imgs, data_samples)
        if mode == "predict":
            return self.predict(imgs, data_samples)
        if mode == "tensor":
            bev = self.encode_bev(imgs, data_samples)
            return dict(self.det_head(bev), bev=bev)
        raise ValueError(f"Invalid mode {mode!r}: use 'loss', 'predict' or 'tensor'")

    def loss(self, imgs: torch.Tensor, data_samples: list) -> dict:
        """Detection losses (+ auxiliary heatmap / occupancy losses) from ``gt_boxes`` / ``gt_labels``."""
        bev = self.encode_bev(imgs, data_samples)
        gt_boxes = [s.gt_boxes.to(bev.device) for s in data_samples]
        gt_labels = [s.gt_labels.to(bev.device) for s in data_samples]
        det_boxes, det_labels = [], []
        for s, boxes, labels in zip(data_samples, gt_boxes, gt_labels):
            pts = s.get("gt_num_pts")
            keep = (torch.ones(len(labels), dtype=torch.bool) if pts is None or self.min_gt_pts <= 0
                    else (pts >= self.min_gt_pts) | (pts < 0)).to(bev.device)
            det_boxes.append(boxes[keep])
            det_labels.append(labels[keep])
        losses = self.det_head.loss(self.det_head(bev), det_boxes, det_labels)
        if self.aux_head is not None:
            losses.update(self.aux_head.loss(self.aux_head(bev), gt_boxes, gt_labels))
        return losses

    @torch.no_grad()
    def predict(self, imgs: torch.Tensor, data_samples: list) -> list:
        """Decoded boxes per sample, stored as ``sample.pred_instances_3d`` (CPU tensors)."""
        bev = self.encode_bev(imgs, data_samples)
        for sample, det in zip(data_samples, self.det_head.predict(self.det_head(bev))):
            sample.pred_instances_3d = {k: v.detach().cpu() for k, v in det.items()}
        return data_samples

"""Multi-view images -> BEV tokens: the image-feature and temporal-queue code paths.

Shared by every model that sees the scene through BEVFormer-lite: the stage-1
detector :class:`bevlm.models.detectors.BEVDet` and ``BEVVLM`` (which adds
test-time streaming through its temporal cache).
The functions take the modules as arguments, so a model keeps its own
attribute names (``img_backbone``, ``img_neck``, ``bev_encoder``) and therefore
its state-dict keys.

Temporal queue as in BEVFormer (Li et al., ECCV 2022): the T-1 history frames
run under ``no_grad`` and hand their BEV forward, warped by the ego motion; only
the last (current) frame gets gradients.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from bevlm.structures import EgoMotion

#: ``frame_bev(imgs_t [B, N, 3, H, W], ego2img_t [B, N, 4, 4], img_shape, prev_bev, motion)``
FrameBEV = Callable[[Tensor, Tensor, tuple, "Tensor | None", "EgoMotion | None"], Tensor]


def extract_multiview_feats(img_backbone: nn.Module, img_neck: nn.Module | None,
                            imgs: Tensor) -> list[Tensor]:
    """Per-camera multi-level image features.

    Args:
        img_backbone: returns a list of ``[B*N, C_l, h_l, w_l]`` maps.
        img_neck: optional neck on that list (e.g. ``FPNLite``), None = identity.
        imgs: ``[B, N, 3, H, W]`` normalised images of one frame.

    Returns:
        list over levels of ``[B, N, C_l, h_l, w_l]``.
    """
    if imgs.dim() != 5:
        raise ValueError(f"extract_multiview_feats: imgs must be [B, N, 3, H, W], got {tuple(imgs.shape)}; "
                         "index the frame axis of the [B, T, N, 3, H, W] batch first.")
    b, n = imgs.shape[:2]
    feats = img_backbone(imgs.flatten(0, 1))  # list of [B*N, C_l, h_l, w_l]
    if img_neck is not None:
        feats = img_neck(feats)
    return [f.view(b, n, *f.shape[1:]) for f in feats]  # [B, N, C_l, h_l, w_l]


def encode_bev_queue(frame_bev: FrameBEV, imgs: Tensor, data_samples: Sequence) -> Tensor:
    """BEV of the current (last) frame of each sample's temporal queue.

    Args:
        frame_bev: encodes one frame (see :data:`FrameBEV`), e.g. image features + the
            BEV encoder.
        imgs: ``[B, T, N, 3, H, W]`` normalised images, oldest frame first.
        data_samples: B samples with metainfo ``img_shape``, ``ego2img [T, N, 4, 4]``,
            ``queue_valid [T]`` (False on left padding) and ``ego_motion`` (T
            :class:`EgoMotion`, previous -> current frame).

    Returns:
        ``[B, Hb*Wb, C]`` BEV tokens of frame T-1 (the only frame with gradients).
    """
    if imgs.dim() != 6 or imgs.shape[0] != len(data_samples):
        raise ValueError(f"encode_bev_queue: imgs must be [B, T, N, 3, H, W] with B = {len(data_samples)} "
                         f"samples, got {tuple(imgs.shape)}; check the data preprocessor.")
    t = imgs.shape[1]
    img_shape = tuple(data_samples[0].img_shape)
    ego2img = torch.stack([s.ego2img for s in data_samples]).to(imgs)  # [B, T, N, 4, 4]
    qvalid = torch.stack([s.queue_valid for s in data_samples]).to(imgs.device)  # [B, T]
    prev_bev, bev = None, None
    for step in range(t):
        motion = EgoMotion.stack([s.ego_motion[step] for s in data_samples]).to(imgs.device)
        has_prev = qvalid[:, step - 1] if step > 0 else torch.zeros_like(qvalid[:, 0])
        motion.valid = motion.valid.to(imgs.device) & has_prev & qvalid[:, step]
        is_last = step == t - 1
        with torch.set_grad_enabled(is_last and torch.is_grad_enabled()):
            bev = frame_bev(imgs[:, step], ego2img[:, step], img_shape,
                            prev_bev if bool(motion.valid.any()) else None, motion)
        prev_bev = bev if is_last else bev.detach()
    return bev  # [B, Hb*Wb, C]

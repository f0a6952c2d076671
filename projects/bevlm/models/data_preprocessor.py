"""Batching and normalising multi-view, multi-frame images."""
from __future__ import annotations

import torch
from mmengine.model import BaseDataPreprocessor

from bevlm.registry import MODELS


@MODELS.register_module()
class BEVVLMDataPreprocessor(BaseDataPreprocessor):
    """Stack ``imgs`` (uint8 ``[T, N, 3, H, W]`` per sample) into a float batch and normalise.

    Args:
        mean: per-channel mean (RGB, 0-255 scale).
        std: per-channel std (RGB, 0-255 scale).
    """

    def __init__(self, mean: tuple = (123.675, 116.28, 103.53), std: tuple = (58.395, 57.12, 57.375)) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 1, 1, 3, 1, 1), persistent=False)

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        inputs = data["inputs"]
        imgs = inputs["imgs"]
        if isinstance(imgs, (list, tuple)):
            imgs = torch.stack(list(imgs))  # [B, T, N, 3, H, W]
        imgs = (imgs.float() - self.mean) / self.std
        return {"inputs": {"imgs": imgs}, "data_samples": data["data_samples"]}

"""Resizing multi-view images with camera intrinsics kept consistent."""
from __future__ import annotations

import numpy as np
from mmcv.transforms import BaseTransform

from bevlm.registry import TRANSFORMS
from bevlm.structures import CAMERA_NAMES


def ego2img_matrix(cam2img, cam2ego, scale_xy=(1.0, 1.0)) -> np.ndarray:
    """4x4 projection ego frame -> pixels of an image resized by ``scale_xy``.

    ``pixel ~ K' @ inv(cam2ego) @ p_ego`` with ``K'`` the intrinsics scaled per axis.
    """
    k = np.eye(4)
    k[:3, :3] = np.asarray(cam2img, dtype=np.float64)
    k[0] *= scale_xy[0]
    k[1] *= scale_xy[1]
    return k @ np.linalg.inv(np.asarray(cam2ego, dtype=np.float64))


@TRANSFORMS.register_module()
class ResizeMultiViewImages(BaseTransform):
    """Resize every view to ``size`` (W, H) and compute ``ego2img`` for the new size.

    Adds ``ego2img`` ``[T, N, 4, 4]`` float32 and ``img_shape`` (H, W).
    """

    def __init__(self, size: tuple = (320, 180), cam_names: tuple = CAMERA_NAMES) -> None:
        self.size = tuple(size)
        self.cam_names = tuple(cam_names)

    def transform(self, results: dict) -> dict:
        from PIL import Image

        w, h = self.size
        out_imgs, mats = [], []
        for info, views in zip(results["queue"], results["imgs"]):
            oh, ow = views.shape[1:3]
            if (ow, oh) != (w, h):
                views = np.stack([np.asarray(Image.fromarray(v).resize((w, h), Image.BILINEAR))
                                  for v in views])
            out_imgs.append(views)
            scale = (w / ow, h / oh)
            mats.append([ego2img_matrix(info["images"][c]["cam2img"], info["images"][c]["cam2ego"], scale)
                         for c in self.cam_names])
        results["imgs"] = out_imgs
        results["ego2img"] = np.asarray(mats, dtype=np.float32)  # [T, N, 4, 4]
        results["img_shape"] = (h, w)
        return results

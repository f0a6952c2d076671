"""Loading the multi-view images of every frame of the temporal queue."""
from __future__ import annotations

import numpy as np
from mmcv.transforms import BaseTransform

from bevlm.registry import TRANSFORMS
from bevlm.structures import CAMERA_NAMES


class CorruptImageError(OSError):
    """An image file exists but cannot be decoded (e.g. a truncated JPEG)."""


def read_rgb(path: str, where: str = "") -> np.ndarray:
    """Read an image as ``[H, W, 3]`` uint8 RGB with clear errors.

    Raises:
        FileNotFoundError: the file is missing (message names the frame/camera and the fix).
        CorruptImageError: the file cannot be fully decoded.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()  # force full decode: a truncated JPEG fails here, not later in a worker
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image not found ({where}). Fix: check data_root / re-run "
                                f"tools/create_data.py so the info file matches the images on disk") from None
    except OSError as e:
        raise CorruptImageError(f"{path}: cannot decode image ({where}): {e}. Fix: re-copy or regenerate "
                                f"this file (a partial download or interrupted write truncates JPEGs)") from e


@TRANSFORMS.register_module()
class LoadMultiViewImages(BaseTransform):
    """Load the 6 camera images of every queue frame.

    Adds ``imgs``: list over queue frames of ``[N_cam, H, W, 3]`` uint8 arrays, and ``ori_shape``.
    """

    def __init__(self, cam_names: tuple = CAMERA_NAMES) -> None:
        self.cam_names = tuple(cam_names)

    def transform(self, results: dict) -> dict:
        imgs = []
        for info in results["queue"]:
            views = []
            for cam in self.cam_names:
                if cam not in info["images"]:
                    raise KeyError(f"frame {info['token']}: no '{cam}' in info['images']. Fix: rebuild "
                                   f"the info file; every frame needs cameras {self.cam_names}")
                views.append(read_rgb(info["images"][cam]["img_path"], f"frame {info['token']} {cam}"))
            shapes = {v.shape for v in views}
            if len(shapes) != 1:
                raise ValueError(f"frame {info['token']}: cameras have different image sizes {shapes}. "
                                 f"Fix: store all cameras at one size")
            imgs.append(np.stack(views))  # [N, H, W, 3]
        results["imgs"] = imgs
        results["ori_shape"] = imgs[-1].shape[1:3]
        return results

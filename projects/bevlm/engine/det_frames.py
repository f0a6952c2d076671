"""The stage-1 detector's decoded boxes on every scored frame of a VLM config's test split.

Shared by the ceiling tools (``tools/perception_text_ceiling.py``, ``tools/grounding_ceiling.py``),
which ask what a model would score by reading the detector's output perfectly. Frames are encoded one
at a time without history (the stage-1 model has none), in the test split's order.
"""
from __future__ import annotations

from typing import Callable, Iterator


def scored_frame_detections(det_config: str, det_ckpt: str, vlm_config: str,
                            wanted: Callable | None = None) -> Iterator[tuple]:
    """Yield ``(index, length, sample, det)`` for each scored frame of ``vlm_config``'s test split:
    the data sample (after the detector's data preprocessor) and the detection head's decoded boxes
    (``bboxes_3d`` / ``scores_3d`` / ``labels_3d`` on the CPU). ``wanted(sample)`` False skips a frame
    before it is encoded."""
    import torch
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope

    from bevlm.registry import DATASETS, MODELS

    from .checkpoint import load_model_weights

    init_default_scope("bevlm")
    model = MODELS.build(Config.fromfile(det_config).model.to_dict())
    load_model_weights(model, det_ckpt, config=det_config)
    model.eval()
    ds_cfg = Config.fromfile(vlm_config).test_dataloader.dataset.to_dict()
    ds_cfg.update(stream_skipped=False, queue_length=1)  # the scored frames only, no history
    ds = DATASETS.build(ds_cfg)
    for i in range(len(ds)):
        data = model.data_preprocessor(pseudo_collate([ds[i]]), False)
        sample = data["data_samples"][0]
        if wanted is not None and not wanted(sample):
            continue
        with torch.no_grad():
            det = model.det_head.predict(model.det_head(model.encode_bev(data["inputs"]["imgs"], [sample])))[0]
        yield i, len(ds), sample, {k: v.detach().cpu() for k, v in det.items()}

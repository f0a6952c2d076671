"""The tiny BEVVLM and a training-split frame dataset, shared by the model-level inference tests."""
import torch
from mmengine.config import Config

from bevlm.registry import DATASETS, MODELS
from tests.conftest import REPO


def tiny_bevvlm_and_frames(world: str, encoder_layers: int = 2):
    """``(model, dataset, cfg)``: ``configs/bev_vlm_tiny.py``'s model (seed 0, eval mode, BEV encoder
    of ``encoder_layers``) and the tiny world's training split, one frame per item, no history."""
    cfg = Config.fromfile(f"{REPO}/configs/bev_vlm_tiny.py")
    mcfg = cfg.model.to_dict()
    mcfg["bev_encoder"]["num_layers"] = encoder_layers
    torch.manual_seed(0)
    model = MODELS.build(mcfg).eval()
    ds = DATASETS.build(dict(type="BEVDriveDataset", ann_file=f"{world}/infos/bevlm_infos_train.pkl",
                             data_root=f"{world}/", pipeline=cfg.pipeline, queue_length=1, qa_mode="frame"))
    return model, ds, cfg


def tiny_bevvlm_one_frame(world: str, encoder_layers: int = 2):
    """``(model, imgs, samples)``: :func:`tiny_bevvlm_and_frames`'s model and its first training
    frame, preprocessed (the inputs of ``model(..., mode='predict')``)."""
    from mmengine.dataset import pseudo_collate

    model, ds, _ = tiny_bevvlm_and_frames(world, encoder_layers=encoder_layers)
    data = model.data_preprocessor(pseudo_collate([ds[0]]), False)
    return model, data["inputs"]["imgs"], data["data_samples"]

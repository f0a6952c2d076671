"""Build the data (and optionally a trained model) from a config and draw frames."""
from __future__ import annotations

import os

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from bevlm.engine import load_model_weights
from bevlm.registry import DATASETS, MODELS
from .frame_figure import draw_frame


def visualize_frames(cfg: Config, out_dir: str, indices: list[int], checkpoint: str | None = None,
                     ann_file: str | None = None, data_root: str | None = None,
                     answer_questions: bool = True) -> list[str]:
    """Draw frames of the test split (or ``ann_file``) into ``out_dir``; returns PNG paths.

    With ``checkpoint`` the model predicts answers, the trajectory and the auxiliary occupancy.
    """
    init_default_scope("bevlm")
    ds_cfg = cfg.test_dataloader.dataset.to_dict()
    ds_cfg.update(queue_length=1, qa_mode="frame", qa_select="all", frame_stride=1, stream_skipped=False)
    if ann_file:  # its images live where its metainfo says, unless data_root is given
        ds_cfg["ann_file"] = os.path.abspath(ann_file)
        ds_cfg["data_root"] = data_root or ""
    elif data_root:
        ds_cfg["data_root"] = data_root
    dataset = DATASETS.build(ds_cfg)
    model = None
    if checkpoint:
        model = MODELS.build(cfg.model)
        load_model_weights(model, checkpoint, cfg.filename or "the config")
        model.eval()
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for idx in indices:
        item = dataset[idx]
        sample = item["data_samples"]
        imgs = item["inputs"]["imgs"][-1].permute(0, 2, 3, 1).numpy()  # [N, H, W, 3]
        pred_answers = pred_traj = occupancy = None
        if model is not None:
            data = model.data_preprocessor(pseudo_collate([item]), False)
            with torch.no_grad():
                if not answer_questions:
                    data["data_samples"][0].qa = []
                out = model(**data, mode="predict")[0]
                pred_answers, pred_traj = out.pred_answers, out.pred_traj.numpy()
                if model.aux_head is not None:
                    bev = model.encode_bev(data["inputs"]["imgs"], data["data_samples"])
                    enc = model.bev_encoder
                    occupancy = model.aux_head.occupancy_score(bev)[0].view(enc.bev_h, enc.bev_w).numpy()
        h, w = sample.img_shape
        oh, ow = sample.ori_shape
        title = f"scene {sample.scene_token[:8]} frame {sample.frame_idx} ({sample.token[:8]})"
        if sample.nominal_rig:
            title += "  [nominal camera rig: geometry approximate]"
        path = os.path.join(out_dir, f"{idx:04d}_{sample.token}.png")
        paths.append(draw_frame(
            path, imgs, sample.ego2img[-1].numpy(), sample.gt_boxes.numpy(), sample.gt_labels.numpy(),
            sample.key_object_infos, sample.qa, pred_answers, sample.gt_traj.numpy(),
            sample.gt_traj_mask.numpy(), pred_traj, occupancy,
            pc_range=tuple(cfg.model.bev_encoder.pc_range), ctag_scale=(w / ow, h / oh), title=title))
    return paths

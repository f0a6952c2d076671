"""Packing a processed item into model ``inputs`` + a typed :class:`DriveDataSample`."""
from __future__ import annotations

import numpy as np
import torch
from mmcv.transforms import BaseTransform

from bevlm.registry import TRANSFORMS
from bevlm.structures import CAMERA_NAMES, DriveDataSample, EgoMotion, driving_command


def _motion(info: dict) -> EgoMotion:
    if info.get("prev2curr") is None:
        return EgoMotion.identity(valid=False)
    return EgoMotion(torch.as_tensor(info["prev2curr"], dtype=torch.float32), True)


@TRANSFORMS.register_module()
class PackDriveInputs(BaseTransform):
    """Pack into ``{"inputs": {"imgs": uint8 [T, N, 3, H, W]}, "data_samples": DriveDataSample}``.

    Queues shorter than ``queue_length`` (the first frames of a scene) are left-padded by
    repeating the oldest frame; ``queue_valid`` [T] marks the real frames, and the ego motion
    of the first real frame is marked invalid inside the queue (no previous BEV to warp).
    """

    def transform(self, results: dict) -> dict:
        queue = results["queue"]
        t_real = len(queue)
        t_total = max(results.get("queue_length", t_real), t_real)
        pad = t_total - t_real
        imgs = np.stack(results["imgs"])  # [T_real, N, H, W, 3]
        imgs = torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 1, 4, 2, 3)  # [T_real, N, 3, H, W]
        ego2img = torch.from_numpy(results["ego2img"])  # [T_real, N, 4, 4]
        motions = [_motion(info) for info in queue]
        # Inside the queue only frame t>0 has its previous BEV computed; the oldest real frame's
        # motion keeps its validity for streaming use (T=1) and is masked by queue_valid otherwise.
        if pad:
            imgs = torch.cat([imgs[:1].expand(pad, -1, -1, -1, -1), imgs])
            ego2img = torch.cat([ego2img[:1].expand(pad, -1, -1, -1), ego2img])
            motions = [EgoMotion.identity(valid=False)] * pad + motions
        cur = queue[-1]
        sample = DriveDataSample()
        sample.set_metainfo({
            "token": cur["token"], "scene_token": cur["scene_token"], "frame_idx": cur["frame_idx"],
            "timestamp": cur["timestamp"], "prev_token": cur.get("prev", ""),
            "cam_names": CAMERA_NAMES, "img_shape": results["img_shape"], "ori_shape": results["ori_shape"],
            "ego2img": ego2img.float(), "ego_motion": motions,
            "queue_valid": torch.tensor([False] * pad + [True] * t_real),
            "nominal_rig": bool(cur.get("nominal_rig", False)), "sample_idx": results.get("sample_idx", -1),
            "domain": results.get("domain", "default"),
            "history_only": bool(results.get("history_only", False)),
        })
        sample.qa = results.get("qa", [])
        drivelm = cur.get("drivelm")
        sample.drivelm_frame = drivelm
        sample.key_object_infos = (drivelm or {}).get("key_object_infos", {})
        sample.scene_description = (drivelm or {}).get("scene_description", "")
        sample.gt_traj = torch.tensor(cur["ego_fut_traj"], dtype=torch.float32)        # [6, 2]
        sample.gt_traj_mask = torch.tensor(cur["ego_fut_mask"], dtype=torch.float32) > 0  # [6]
        sample.ego_status = torch.tensor(cur["ego_status"], dtype=torch.float32)          # [5]
        # the navigation command of nuScenes open-loop planning (from the future, as ST-P3 / UniAD /
        # VAD derive it); read only by a trajectory head built with num_commands
        sample.ego_command = torch.tensor(driving_command(cur["ego_fut_traj"], cur["ego_fut_mask"]),
                                          dtype=torch.long)                               # []
        inst = cur.get("instances", [])
        boxes = np.array([i["bbox_3d"] + list(i["velocity"]) for i in inst], dtype=np.float32).reshape(-1, 9)
        sample.gt_boxes = torch.from_numpy(boxes)                                         # [M, 9]
        sample.gt_labels = torch.tensor([i["bbox_label_3d"] for i in inst], dtype=torch.long)
        # lidar points (mini world: visible pixels) per box, -1 where unknown; the nuScenes
        # detection metric ignores boxes with 0, so detectors train on the others only
        sample.gt_num_pts = torch.tensor([int(i.get("num_lidar_pts", -1)) for i in inst],
                                         dtype=torch.long)                                # [M]
        fut = np.array([i["fut_boxes"] for i in inst], dtype=np.float32).reshape(-1, 6, 5)
        sample.gt_agent_fut_boxes = torch.from_numpy(fut)                                 # [M, 6, 5]
        return {"inputs": {"imgs": imgs.contiguous()}, "data_samples": sample}

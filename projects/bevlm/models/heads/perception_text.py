"""Detections as text in the LLM prefix: what the BEV detector found, in the answers' own c-tag format.

DriveLM's perception answers name the key objects by c-tags ``<cK,CAM,x,y>``: the pixel of the
object's centre in one camera image. Visual tokens pooled to a 6 x 6 grid hold little of that pixel
geometry, while the stage-1 CenterPoint head (:class:`~bevlm.models.heads.CenterPointHead`) already
localises objects in 3D. :class:`PerceptionText` runs that head on the frame's BEV, projects each
box centre into the camera that sees it closest to the image centre, and writes the nearest
objects as one line of text, e.g.::

    Detected: car 9 m <c1,CAM_FRONT,119.0,106.1>; truck 21 m <c2,CAM_BACK,237.1,113.2>.

The line is tokenised, cut or padded to a fixed number of tokens (so every frame's prefix has the
same length) and embedded with the LLM's own (frozen) input embeddings; ``BEVVLM`` places it after
the visual tokens. Pixels are in the stored images' frame (``ori_shape``), the frame of the c-tags
(docs/data.md, "c-tag pixel convention"). Detected objects, not ground truth, fill the line in
training as at test time, so the LLM learns how far to trust them.

The head is frozen here (it is trained in stage 1, ``configs/bev_det_pretrain.py``, and loaded with
the rest of the stage-1 checkpoint under the same key names, ``det_head.*``).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from bevlm.models.llm.generation import lm_device

#: The classes of the info files (labels 0-9 of the detection head; 10, traffic_light, is not detected).
NUSCENES_CLASSES = ("car", "truck", "construction_vehicle", "bus", "trailer", "barrier", "motorcycle",
                    "bicycle", "pedestrian", "traffic_cone")
#: Road users: the classes a key object can be (the mini world's key agents).
AGENT_CLASSES = ("car", "truck", "construction_vehicle", "bus", "trailer", "motorcycle", "bicycle",
                 "pedestrian")
#: Words for the classes in the line (short, and as the answers say them).
CLASS_WORDS = {"construction_vehicle": "construction vehicle", "traffic_cone": "traffic cone"}


def project_to_cameras(centres: Tensor, ego2img: Tensor, img_hw: Sequence[int], min_depth: float = 0.5) -> tuple:
    """Pixel of each 3D point in the camera that sees it nearest to the image centre.

    Args:
        centres: ``[M, 3]`` points (x, y, z) in the ego frame.
        ego2img: ``[N, 4, 4]`` ego -> pixel projections of the N cameras (network image pixels).
        img_hw: (H, W) of the images ``ego2img`` projects into.
        min_depth: a point less than this far in front of a camera is not seen by it (m).

    Returns:
        ``(cam [M] long, uv [M, 2])``: the camera index (-1 where no camera sees the point inside
        its image) and the pixel there (undefined where cam is -1).
    """
    m = centres.shape[0]
    h, w = float(img_hw[0]), float(img_hw[1])
    homo = torch.cat([centres.double(), centres.new_ones(m, 1).double()], dim=1)  # [M, 4]
    p = torch.einsum("nij,mj->mni", ego2img.double(), homo)  # [M, N, 4]
    depth = p[..., 2]
    uv = p[..., :2] / depth.clamp(min=1e-6).unsqueeze(-1)  # [M, N, 2]
    inside = (depth > min_depth) & (uv[..., 0] >= 0) & (uv[..., 0] < w) & (uv[..., 1] >= 0) & (uv[..., 1] < h)
    off_centre = (uv[..., 0] - w / 2).abs() / w + (uv[..., 1] - h / 2).abs() / h
    off_centre = torch.where(inside, off_centre, torch.full_like(off_centre, float("inf")))
    cam = off_centre.argmin(dim=1)  # [M]
    seen = inside.any(dim=1)
    cam = torch.where(seen, cam, torch.full_like(cam, -1))
    pix = uv[torch.arange(m), cam.clamp(min=0)]  # [M, 2]
    return cam, pix.float()


class PerceptionText:
    """Writes a frame's detections as one fixed-length line of LLM input (see the module doc).

    Args:
        score_thr: detections below this score are left out.
        max_objects: at most this many objects, nearest first.
        max_range: objects farther than this (m, from the ego origin) are left out.
        num_tokens: tokens of the line: a longer line loses its farthest objects, a shorter one is
            padded with ``pad_text`` tokens.
        classes: the class names written (others left out); labels index :data:`NUSCENES_CLASSES`.
        pad_text: the text whose tokens pad the line.
        motion_speed: if set, each object also gets a motion word from the detector's velocity
            estimate: ``moving`` at a speed >= this (m/s), else ``stopped`` ("car 9 m moving
            <c1,...>"). The DriveLM answers call an object stopped below 0.5 m/s of future mean
            speed (the mini world's rule); the velocity needs a detector that saw motion (a
            temporal queue, ``configs/ablations/bev_det_pretrain_queue-2.py``). None: no word.
    """

    def __init__(self, score_thr: float = 0.3, max_objects: int = 6, max_range: float = 40.0,
                 num_tokens: int = 96, classes: Sequence[str] = AGENT_CLASSES, pad_text: str = "\n",
                 motion_speed: float | None = None) -> None:
        unknown = sorted(set(classes) - set(NUSCENES_CLASSES))
        if unknown:
            raise ValueError(f"perception_text.classes: {unknown} are not detection classes; choose among "
                             f"{list(NUSCENES_CLASSES)}")
        if num_tokens < 8 or max_objects < 1:
            raise ValueError(f"perception_text: num_tokens must be >= 8 and max_objects >= 1, got "
                             f"num_tokens={num_tokens}, max_objects={max_objects}")
        self.score_thr, self.max_objects, self.max_range = float(score_thr), int(max_objects), float(max_range)
        self.num_tokens, self.pad_text = int(num_tokens), pad_text
        self.class_ids = {NUSCENES_CLASSES.index(c) for c in classes}
        if motion_speed is not None and not float(motion_speed) > 0:
            raise ValueError(f"perception_text.motion_speed must be a speed > 0 (m/s) or None, got {motion_speed!r}")
        self.motion_speed = None if motion_speed is None else float(motion_speed)

    def objects(self, det: dict, sample) -> list[tuple]:
        """``[(class word, distance m, camera name, x, y), ...]`` of one sample's detections (nearest
        first), pixels in the stored images' frame; with ``motion_speed`` each tuple also ends with
        its motion word (``moving`` / ``stopped``)."""
        boxes, scores, labels = det["bboxes_3d"], det["scores_3d"], det["labels_3d"]
        keep = [i for i in range(len(scores)) if float(scores[i]) >= self.score_thr
                and int(labels[i]) in self.class_ids and float(boxes[i, :2].norm()) <= self.max_range]
        if not keep:
            return []
        boxes, labels = boxes[keep], labels[keep]
        cam, uv = project_to_cameras(boxes[:, :3], sample.ego2img[-1], sample.img_shape)
        sy = float(sample.ori_shape[0]) / float(sample.img_shape[0])
        sx = float(sample.ori_shape[1]) / float(sample.img_shape[1])
        out = []
        for j in range(len(keep)):
            if int(cam[j]) < 0:
                continue
            name = NUSCENES_CLASSES[int(labels[j])]
            obj = (CLASS_WORDS.get(name, name), float(boxes[j, :2].norm()), sample.cam_names[int(cam[j])],
                   float(uv[j, 0]) * sx, float(uv[j, 1]) * sy)
            if self.motion_speed is not None:
                speed = float(boxes[j, 7:9].norm()) if boxes.shape[1] >= 9 else 0.0
                obj += ("moving" if speed >= self.motion_speed else "stopped",)
            out.append(obj)
        out.sort(key=lambda o: o[1])
        return out[:self.max_objects]

    @staticmethod
    def describe(objects: list[tuple]) -> str:
        """The line for :meth:`objects` (c-tags numbered in the order written, distances in whole metres:
        the official match metric reads every decimal number of an answer as a pixel coordinate; an
        object's motion word, where it has one, follows its distance)."""
        if not objects:
            return "Detected: nothing."
        parts = [f"{o[0]} {o[1]:.0f} m{''.join(' ' + w for w in o[5:])} <c{k + 1},{o[2]},{o[3]:.1f},{o[4]:.1f}>"
                 for k, o in enumerate(objects)]
        return "Detected: " + "; ".join(parts) + "."

    def line_ids(self, objects: list[tuple], tokenizer) -> list[int]:
        """The token ids of the line with as many of the objects as fit in ``num_tokens`` (no padding)."""
        for n in range(len(objects), -1, -1):
            ids = tokenizer(self.describe(objects[:n]), add_special_tokens=False)["input_ids"]
            if len(ids) <= self.num_tokens:
                return ids
        return ids[:self.num_tokens]  # pragma: no cover - "Detected: nothing." always fits 8 tokens

    def padded(self, ids: list[int], tokenizer) -> list[int]:
        """``ids`` (a line's ids, at most ``num_tokens``) padded to exactly ``num_tokens``."""
        pad = tokenizer(self.pad_text, add_special_tokens=False)["input_ids"]
        if not pad:
            raise ValueError(f"perception_text.pad_text={self.pad_text!r} tokenises to nothing; choose another")
        reps = -(-(self.num_tokens - len(ids)) // len(pad))
        return (ids + pad * reps)[:self.num_tokens]

    def token_ids(self, objects: list[tuple], tokenizer) -> list[int]:
        """Exactly ``num_tokens`` token ids: the line with as many of the objects as fit, then padding."""
        return self.padded(self.line_ids(objects, tokenizer), tokenizer)

    def texts(self, det_head, bev: Tensor, data_samples: list) -> list[str]:
        """The line of every sample (decoded by ``det_head`` from ``bev``); also stored as
        ``sample.perception_text`` for inspection, and the decoded detections as
        ``sample.perception_dets`` (read by :class:`~bevlm.models.heads.question_grounding.QuestionGrounding`)."""
        with torch.no_grad():
            dets = det_head.predict(det_head(bev.detach()))
        out = []
        for det, sample in zip(dets, data_samples):
            det = {k: v.detach().cpu() for k, v in det.items()}
            sample.perception_dets = det
            objs = self.objects(det, sample)
            sample.perception_objects = objs
            sample.perception_text = self.describe(objs)
            out.append(sample.perception_text)
        return out

    def embed(self, det_head, bev: Tensor, data_samples: list, llm) -> Tensor:
        """``[B, num_tokens, D]`` input embeddings of the samples' lines (no gradient). Each sample also
        keeps its line's ids as ``sample.perception_ids`` (unpadded), for speculative decoding's lookup."""
        self.texts(det_head, bev, data_samples)
        for s in data_samples:  # each line tokenised once: kept unpadded, embedded padded
            s.perception_ids = self.line_ids(s.perception_objects, llm.tokenizer)
        ids = [self.padded(s.perception_ids, llm.tokenizer) for s in data_samples]
        with torch.no_grad():  # lm_device: the table may be quantised (no float .weight)
            emb = llm.embed_tokens(torch.tensor(ids, dtype=torch.long, device=lm_device(llm.lm)))
        return emb.to(bev.dtype)

"""Where the objects a question names stand, read off the model's own detections.

DriveLM questions name objects by c-tags ``<cK,CAM,u,v>``: a camera and the pixel of the object's
centre in its image. Several answers follow from where that object stands around the ego vehicle
(which action would hit it, whether it is in the ego's path), a fact the pixel alone does not give.
:class:`QuestionGrounding` finds, among the frame's detections (the frozen stage-1 head that
``perception_text`` already runs), the one whose centre projects into the named camera nearest to
the tag's pixel, and writes its position after the tag, in whole metres of the ego frame::

    ... collision with <c1,CAM_FRONT,119.0,106.1>?
    ... collision with <c1,CAM_FRONT,119.0,106.1> (12 m ahead, 1 m left)?

A tag with no detection within ``radius`` pixels gets ``(not detected)``. Detections, not ground
truth, are written in training as at test time (as for the detections line), so the LLM learns how
far to trust them. Only the question text the LLM reads changes: the question's family, index and
official id stay those of the original question.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from bevlm.structures.qa_families import CTAG_RE

from .perception_text import AGENT_CLASSES, NUSCENES_CLASSES


def position_words(x: float, y: float) -> str:
    """``"12 m ahead, 1 m left"`` for a point ``x`` m forward and ``y`` m left of the ego origin
    (whole metres: the official match metric reads an answer's decimal numbers as pixels)."""
    return f"{abs(x):.0f} m {'ahead' if x >= 0 else 'behind'}, {abs(y):.0f} m {'left' if y >= 0 else 'right'}"


class QuestionGrounding:
    """Writes the detected ego-frame position of every object a question names (see the module doc).

    Args:
        radius: a detection is the tag's object when its centre projects into the tag's camera within
            this many pixels of the tag's pixel (pixels of the stored images, the frame of the c-tags).
        score_thr: detections below this score are not candidates.
        classes: the detection classes that can be a tagged object (labels index
            :data:`~bevlm.models.heads.perception_text.NUSCENES_CLASSES`).
        families: question families whose tags are grounded (None: every question with a c-tag).
    """

    NOT_DETECTED = "not detected"

    def __init__(self, radius: float = 40.0, score_thr: float = 0.1, classes: Sequence[str] = AGENT_CLASSES,
                 families: Sequence[str] | None = None) -> None:
        unknown = sorted(set(classes) - set(NUSCENES_CLASSES))
        if unknown:
            raise ValueError(f"question_grounding.classes: {unknown} are not detection classes; choose among "
                             f"{list(NUSCENES_CLASSES)}")
        if not float(radius) > 0:
            raise ValueError(f"question_grounding.radius must be > 0 pixels, got {radius!r}")
        self.radius, self.score_thr = float(radius), float(score_thr)
        self.class_ids = {NUSCENES_CLASSES.index(c) for c in classes}
        self.families = None if families is None else set(families)

    def candidates(self, det: dict) -> torch.Tensor:
        """``[M, 3]`` ego-frame centres of the detections that may be a tagged object."""
        boxes, scores, labels = det["bboxes_3d"], det["scores_3d"], det["labels_3d"]
        keep = [i for i in range(len(scores)) if float(scores[i]) >= self.score_thr
                and int(labels[i]) in self.class_ids]
        return boxes[keep, :3].double() if keep else boxes.new_zeros(0, 3).double()

    def locate(self, centres: torch.Tensor, sample, cam: str, u: float, v: float) -> tuple | None:
        """``(x, y)`` of the centre nearest to pixel ``(u, v)`` of camera ``cam`` (stored-image pixels)
        within ``radius``, or None."""
        if cam not in sample.cam_names or centres.shape[0] == 0:
            return None
        k = list(sample.cam_names).index(cam)
        p = torch.cat([centres, centres.new_ones(len(centres), 1)], dim=1) @ sample.ego2img[-1][k].double().T
        depth = p[:, 2]
        sx = float(sample.ori_shape[1]) / float(sample.img_shape[1])
        sy = float(sample.ori_shape[0]) / float(sample.img_shape[0])
        pu = p[:, 0] / depth.clamp(min=1e-6) * sx
        pv = p[:, 1] / depth.clamp(min=1e-6) * sy
        dist = torch.hypot(pu - u, pv - v)
        dist = torch.where(depth > 0.5, dist, torch.full_like(dist, float("inf")))
        j = int(dist.argmin())
        if not float(dist[j]) <= self.radius:
            return None
        return float(centres[j, 0]), float(centres[j, 1])

    def ground(self, question: str, centres: torch.Tensor, sample) -> str:
        """``question`` with each c-tag followed by its object's position (or ``(not detected)``)."""
        def place(m):
            xy = self.locate(centres, sample, m.group(2), float(m.group(3)), float(m.group(4)))
            return f"{m.group(0)} ({self.NOT_DETECTED if xy is None else position_words(*xy)})"
        return CTAG_RE.sub(place, question)

    def apply(self, data_samples: list) -> None:
        """Replace each sample's ``qa`` by copies whose questions are grounded, from the detections
        :class:`~bevlm.models.heads.perception_text.PerceptionText` kept (``sample.perception_dets``);
        the originals stay in ``sample.qa_ungrounded``."""
        for s in data_samples:
            det = getattr(s, "perception_dets", None)
            if det is None:
                raise ValueError("question_grounding: the sample has no detections; it needs perception_text "
                                 "(which runs the detection head) in the same model")
            if getattr(s, "qa_ungrounded", None) is None:
                s.qa_ungrounded = list(s.qa)
            centres = self.candidates(det)
            s.qa = [dataclasses.replace(q, question=self.ground(q.question, centres, s))
                    if self.families is None or q.family in self.families else q for q in s.qa_ungrounded]

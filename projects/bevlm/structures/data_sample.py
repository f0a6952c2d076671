"""The typed data sample that flows from the dataset to the model and metrics."""
from __future__ import annotations

from dataclasses import dataclass, field

from mmengine.structures import BaseDataElement


@dataclass
class QAItem:
    """One DriveLM question/answer pair.

    Attributes:
        question: the question text, c-tags kept verbatim.
        answer: the ground-truth answer ('' when unknown, e.g. test questions).
        stage: 'perception' | 'prediction' | 'planning' | 'behavior'.
        index: position ``i`` of the QA in the frame's concatenated
            perception+prediction+planning+behavior list (the official id is
            ``f"{scene}_{frame}_{i}"``).
        family: question family name (see :mod:`bevlm.structures.qa_families`).
    """

    question: str
    answer: str
    stage: str
    index: int
    family: str = "other"
    extra: dict = field(default_factory=dict)


class DriveDataSample(BaseDataElement):
    """Data sample of one key frame (plus its temporal history).

    Metainfo (set once, read-only by convention):
        token, scene_token, frame_idx, timestamp: identify the key frame.
        cam_names: tuple of camera names (order of the camera axis).
        img_shape: (H, W) of the network input images.
        ori_shape: (H, W) of the stored images.
        ego2img: float32 ``[T, N, 4, 4]`` ego-frame -> pixel projection of the
            network input images, per queue frame (last = current frame).
        ego_motion: list of T :class:`EgoMotion` (prev -> curr for each queue
            frame; ``valid=False`` where the previous frame is not available).
        scene_first: list of T bools, True where a frame starts its scene.
        nominal_rig: True when calibration is a nominal rig (DriveLM-only data).
        history_only: True for a frame a subsampled test split streams for the temporal BEV only
            (not answered, not scored; see ``BEVDriveDataset(stream_skipped=True)``).

    Data fields:
        qa: list of :class:`QAItem` for this sample (one question when QA is
            expanded for training; the whole frame when grouped for evaluation).
        key_object_infos: DriveLM ``key_object_infos`` dict (c-tag -> info).
        gt_traj: ``[6, 2]`` future ego waypoints (x, y) in the current ego
            frame at 0.5 s steps; gt_traj_mask: ``[6]`` bool.
        ego_status: ``[D]`` ego state (speed, acceleration, yaw rate, ...).
        ego_command: ``[]`` long, the driving command (index into
            :data:`bevlm.structures.COMMANDS`; turn left / turn right / go straight), derived from
            the future waypoints as nuScenes planners are given it; only planners configured for it
            read it (``TrajectoryTokenHead(num_commands=3)``), never the LLM.
        gt_boxes: ``[M, 9]`` boxes (x, y, z, l, w, h, yaw, vx, vy) in the
            current ego frame; gt_labels: ``[M]`` class indices;
            gt_fut_boxes (optional): future box centres for collision checks.
        scene_description: str.
    """


def is_history_only(sample) -> bool:
    """True for a frame a test split streams for the temporal BEV only (``history_only`` metainfo):
    the model returns it unanswered and no metric or writer may count it. ``sample``: a
    :class:`DriveDataSample` or its ``to_dict()`` (what mmengine's evaluator hands the metrics)."""
    if isinstance(sample, dict):
        return bool(sample.get("history_only", False))
    return bool(sample.metainfo.get("history_only", False))


def scored_samples(samples) -> list:
    """The samples of ``samples`` that are scored (not history-only)."""
    return [s for s in samples if not is_history_only(s)]

"""The dataset of key frames with multi-view images, temporal history and DriveLM QA."""
from __future__ import annotations

import copy
import logging
import os

from mmengine.dataset import BaseDataset

from bevlm.registry import DATASETS
from bevlm.structures import QAItem
from bevlm.utils import load_plain_pickle
from .drivelm_io import flatten_qa, iter_test_questions, load_drivelm_questions

logger = logging.getLogger(__name__)


def _load_info_file(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: info file not found. Fix: run tools/create_data.py "
                                f"(see docs/data.md) or pass the right ann_file")
    data = load_plain_pickle(path)  # refuses any pickled global: an info file cannot run code
    if not isinstance(data, dict):
        raise TypeError(f"{path}: an info file holds a dict, got {type(data).__name__}. Fix: regenerate it "
                        f"with tools/create_data.py")
    for key in ("metainfo", "data_list"):
        if key not in data:
            raise KeyError(f"{path}: missing key '{key}'. Fix: info files are "
                           f"{{'metainfo', 'data_list'}} as written by tools/create_data.py")
    return data


def info_file_frames(path: str) -> list[dict]:
    """The frames (``data_list``) of an info file, loaded without running code and checked as the
    dataset checks it; for readers that need no images (the ego-status planner's fit)."""
    return list(_load_info_file(path)["data_list"])


def _check_family_repeats(family_repeats: dict | None) -> dict:
    """``family_repeats`` as ``{family: int}``, each family a known one and each count >= 0."""
    from bevlm.structures.qa_families import FAMILIES

    known = sorted({f for names in FAMILIES.values() for f in names})
    out = {}
    for family, repeats in dict(family_repeats or {}).items():
        if family not in known:
            raise ValueError(f"BEVDriveDataset: family_repeats names an unknown question family {family!r}. "
                             f"Fix: use one of {known}")
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 0:
            raise ValueError(f"BEVDriveDataset: family_repeats[{family!r}]={repeats!r} must be an integer >= 0")
        out[family] = int(repeats)
    return out


def dataset_frames(dataset) -> list[dict]:
    """The info-file frames a dataset's items come from, each once, in order (every dataset of a
    concatenation): what a fit on the training split (the ego-status planner) reads without
    loading images."""
    frames, seen = [], set()
    for ds in getattr(dataset, "datasets", [dataset]):
        for entry in ds.data_list:
            frame = ds.frames[entry["frame"]]
            if frame["token"] not in seen:
                seen.add(frame["token"])
                frames.append(frame)
    return frames


@DATASETS.register_module()
class BEVDriveDataset(BaseDataset):
    """Key frames of a nuScenes-format source joined with DriveLM QA.

    One item is one key frame with its temporal queue of up to ``queue_length`` frames of the
    same scene (never crossing a scene boundary) and a set of its QA pairs:

    * ``qa_mode='chunks'`` (training): the frame's QA list is split into groups of
      ``qa_per_sample`` questions (strided, so each group mixes stages); one item per group,
      so an epoch visits every QA pair exactly once. ``qa_per_sample=1`` expands per question.
    * ``qa_mode='frame'`` (evaluation): one item per frame carrying its whole QA graph.
    * ``qa_mode='none'``: one item per frame, no QA (e.g. planning-only evaluation).

    Args:
        ann_file: info pickle written by ``tools/create_data.py``.
        pipeline: transforms (see :mod:`bevlm.datasets.transforms`).
        data_root: folder the ``img_path`` entries are relative to ('' = ``metainfo.data_root``).
        queue_length: T, number of frames (current + T-1 previous) per item.
        qa_mode: 'chunks' | 'frame' | 'none'.
        qa_per_sample: questions per item in 'chunks' mode.
        stages: DriveLM stages to keep.
        require_qa: drop frames without DriveLM QA (they still serve as temporal history).
        max_frames: keep only the first N QA frames (quick experiments), None = all.
        qa_select: 'all' (the whole QA graph) or 'test' (only the questions of the official
            test format, selected as DriveLM's ``extract_data.py`` does: what the challenge scores).
        frame_stride: keep every k-th QA frame (faster evaluation on a documented subset).
        stream_skipped: in test mode, also yield the frames a split skips (``frame_stride > 1``;
            key frames without DriveLM QA under ``require_qa``, as most nuScenes key frames are;
            with ``questions_file``, the frames of its scenes it asks nothing about), in stream
            order, as history-only items (no questions, metainfo ``history_only=True``, the current
            frame only): a streaming model encodes them to carry its temporal BEV as on the full
            split, and answers and scores only the others (:meth:`BEVVLM.predict` returns them
            unanswered and every metric and writer skips them, ``bevlm.structures.scored_samples``).
            False: skipped frames are not loaded.
        mc_seed: the questions that the official test format turns into multiple choice
            (the selected moving-status and behavior QA) are asked in that form, with the
            options drawn as :class:`bevlm.evaluation.DriveLMMetric` draws them with the same
            seed; the answer is then the letter. None keeps every question free-form.
        domain: name of the data domain of every sample (selects the LoRA adapter of a
            multi-domain model, see ``BEVVLM.domain_adapters``); None = the info file's
            ``metainfo['domain']``, else ``'default'``.
        test_format_repeats: in 'chunks' mode, also add the frame's official test-format
            questions (the ``qa_select='test'`` set, multiple choice where the test format asks
            so) as this many extra items per frame: training then sees the question forms the
            challenge scores as often as the rest of the graph. 0 = the graph's chunks only.
            Other modes ignore it (a training config reused per frame, e.g. for calibration,
            still yields each frame once).
        family_repeats: in 'chunks' mode, ``{family: r}``: also add the frame's questions of that
            question family (:mod:`bevlm.structures.qa_families`, e.g. ``'collision_actions'``) as
            ``r`` extra items per frame that has any, so a family the model under-learns is trained
            more often. None / {} = no extra items. Other modes ignore it.
        questions_file: a questions-only DriveLM test file (the challenge's
            ``v1_1_val_nus_q_only.json``, or one from ``tools/create_data.py drivelm-questions``):
            one item per frame of that file, asking exactly its questions in the official id order
            (``QAItem.index`` is the ``i`` of the id ``f"{scene}_{frame}_{i}"``; answers empty). The
            frames are looked up by token in the info file, which needs no DriveLM QA for them;
            ``qa_mode``, ``qa_select``, ``frame_stride``, ``max_frames`` and ``mc_seed`` do not apply
            (the file's multiple-choice questions carry their options). None: questions from the
            info file's DriveLM QA.
        test_mode: mmengine flag.
    """

    def __init__(self, ann_file: str, pipeline: list, data_root: str = "", queue_length: int = 1,
                 qa_mode: str = "chunks", qa_per_sample: int = 8,
                 stages: tuple = ("perception", "prediction", "planning", "behavior"),
                 require_qa: bool = True, max_frames: int | None = None, qa_select: str = "all",
                 frame_stride: int = 1, mc_seed: int | None = 0, domain: str | None = None,
                 test_format_repeats: int = 0, questions_file: str | None = None,
                 stream_skipped: bool = False, family_repeats: dict | None = None,
                 test_mode: bool = False) -> None:
        if qa_mode not in ("chunks", "frame", "none"):
            raise ValueError(f"qa_mode must be 'chunks', 'frame' or 'none', got {qa_mode!r}")
        if queue_length < 1:
            raise ValueError(f"queue_length must be >= 1, got {queue_length}")
        self.queue_length = queue_length
        self.qa_mode = qa_mode
        self.qa_per_sample = qa_per_sample
        self.stages = tuple(stages)
        self.require_qa = require_qa
        self.max_frames = max_frames
        self.mc_seed = mc_seed
        if qa_select not in ("all", "test"):
            raise ValueError(f"qa_select must be 'all' or 'test', got {qa_select!r}")
        if frame_stride < 1:
            raise ValueError(f"frame_stride must be >= 1, got {frame_stride}")
        if test_format_repeats < 0:
            raise ValueError(f"test_format_repeats={test_format_repeats} must be >= 0")
        self.test_format_repeats = int(test_format_repeats)
        self.family_repeats = _check_family_repeats(family_repeats)
        self.qa_select = qa_select
        self.frame_stride = frame_stride
        self.stream_skipped = bool(stream_skipped)
        self.domain = domain
        self.questions_file = questions_file
        self.frames: list[dict] = []
        self._token2frame: dict[str, int] = {}
        super().__init__(ann_file=ann_file, data_root=data_root, pipeline=pipeline,
                         test_mode=test_mode, serialize_data=False, lazy_init=False)

    # ------------------------------------------------------------------ loading
    def load_data_list(self) -> list[dict]:
        from bevlm.evaluation.drivelm_testset import build_test_frame, mc_questions_for_frame
        from bevlm.structures.qa_families import classify_question

        data = _load_info_file(self.ann_file)
        self._metainfo.update({k: v for k, v in data["metainfo"].items() if k not in self._metainfo})
        if not self.data_root:
            self.data_root = data["metainfo"].get("data_root", "")
        if self.domain is None:
            self.domain = str(data["metainfo"].get("domain", "default"))
        self.frames = data["data_list"]
        self._token2frame = {f["token"]: i for i, f in enumerate(self.frames)}
        if self.questions_file is not None:
            entries = self._question_file_entries()
            if self.stream_skipped and self.test_mode:  # the other frames of those scenes: history only
                asked = {e["frame"] for e in entries}
                scenes = {self.frames[fi]["scene_token"] for fi in asked}
                entries += [{"frame": fi, "qa": [], "history_only": True} for fi, f in enumerate(self.frames)
                            if fi not in asked and f["scene_token"] in scenes]
            return self._stream_order(entries) if self.test_mode else entries
        entries = []
        n_frames = n_seen = 0
        for fi, frame in enumerate(self.frames):
            if frame.get("drivelm") is None and self.require_qa:
                if self.stream_skipped and self.test_mode:  # a key frame without QA: history only
                    entries.append({"frame": fi, "qa": [], "history_only": True})
                continue
            n_seen += 1
            if (n_seen - 1) % self.frame_stride:
                if self.stream_skipped and self.test_mode:  # encoded for the stream, not scored
                    entries.append({"frame": fi, "qa": [], "history_only": True})
                continue
            if self.max_frames is not None and n_frames >= self.max_frames:
                break
            n_frames += 1
            selected = test_set = None
            if (self.qa_select == "test" or self.test_format_repeats) and frame.get("drivelm") is not None:
                test_set = set(build_test_frame(frame["drivelm"], frame["scene_token"], frame["token"],
                                                self.mc_seed or 0)[1])
                selected = test_set if self.qa_select == "test" else None
            qa = []
            if frame.get("drivelm") is not None and self.qa_mode != "none":
                mc = {} if self.mc_seed is None else mc_questions_for_frame(
                    frame["drivelm"], frame["scene_token"], frame["token"], self.mc_seed)
                for q in flatten_qa(frame["drivelm"]):
                    if q["stage"] not in self.stages or (selected is not None and q["index"] not in selected):
                        continue
                    item = QAItem(q["Q"], q["A"], q["stage"], q["index"],
                                  classify_question(q["Q"], q["stage"]))
                    if q["index"] in mc:  # ask the official multiple-choice form
                        item.extra = {"free_question": q["Q"], "free_answer": q["A"]}
                        item.question, item.answer = mc[q["index"]].question, mc[q["index"]].answer
                    qa.append(item)
            if self.qa_mode == "chunks":
                n_chunks = max(1, -(-len(qa) // self.qa_per_sample))
                for c in range(n_chunks):
                    entries.append({"frame": fi, "qa": qa[c::n_chunks]})
                test_qa = [q for q in qa if test_set is not None and q.index in test_set]
                if test_qa:
                    entries += [{"frame": fi, "qa": list(test_qa)} for _ in range(self.test_format_repeats)]
                for family, repeats in self.family_repeats.items():
                    family_qa = [q for q in qa if q.family == family]
                    if family_qa:
                        entries += [{"frame": fi, "qa": list(family_qa)} for _ in range(repeats)]
            else:
                entries.append({"frame": fi, "qa": qa})
        if not entries:
            raise ValueError(f"{self.ann_file}: no usable frames (require_qa={self.require_qa}). "
                             f"Fix: build the info file with --drivelm-json, or set require_qa=False")
        if self.test_mode:
            entries = self._stream_order(entries)
        return entries

    def _question_file_entries(self) -> list[dict]:
        """One entry per frame of ``questions_file``: its questions, indexed by official ``i``."""
        from bevlm.structures.qa_families import classify_question

        questions = load_drivelm_questions(self.questions_file)
        entries: dict[str, dict] = {}
        missing, wrong_scene = [], []
        for scene_token, frame_token, i, stage, item in iter_test_questions(questions):
            fi = self._token2frame.get(frame_token)
            if fi is None:
                if not missing or missing[-1] != frame_token:
                    missing.append(frame_token)
                continue
            if self.frames[fi]["scene_token"] != scene_token:
                wrong_scene.append(f"{frame_token} (file: scene {scene_token}, infos: scene "
                                   f"{self.frames[fi]['scene_token']})")
                continue
            entry = entries.setdefault(frame_token, {"frame": fi, "qa": []})
            entry["qa"].append(QAItem(item["Q"], "", stage, i, classify_question(item["Q"], stage)))
        if missing:
            shown = ", ".join(missing[:5]) + (f", ... ({len(missing) - 5} more)" if len(missing) > 5 else "")
            raise ValueError(
                f"{self.questions_file}: {len(missing)} frame(s) are not in the info file {self.ann_file}: "
                f"{shown}. Fix: build the info file from the nuScenes split that holds these samples "
                f"(tools/create_data.py nuscenes --version v1.0-trainval; the challenge questions are on "
                f"nuScenes val), or pass the info file written with this test file")
        if wrong_scene:
            raise ValueError(f"{self.questions_file}: frame(s) filed under another scene than in "
                             f"{self.ann_file}: {', '.join(wrong_scene[:5])}. Fix: use the info file of "
                             f"the same nuScenes version as the test file")
        return list(entries.values())

    def _stream_order(self, entries: list[dict]) -> list[dict]:
        """Test order for streaming: the frames of a scene contiguous and in time order.

        A streaming model (:class:`bevlm.models.temporal_cache.TemporalBEVCache`) reuses the
        previous frame's BEV only if that frame was the last one of its scene it saw; a stable
        sort by (first appearance of the scene, timestamp) guarantees it whatever order the info
        file lists the frames in (a no-op for the converters' scene-by-scene, time-ordered files).
        """
        first_seen: dict[str, int] = {}
        for e in entries:
            first_seen.setdefault(self.frames[e["frame"]]["scene_token"], len(first_seen))
        return sorted(entries, key=lambda e: (first_seen[self.frames[e["frame"]]["scene_token"]],
                                              float(self.frames[e["frame"]].get("timestamp", 0.0))))

    # ------------------------------------------------------------------ items
    def queue_indices(self, frame_index: int) -> list[int]:
        """Frame indices of the temporal queue, oldest first, all in the current frame's scene."""
        out = [frame_index]
        frame = self.frames[frame_index]
        while len(out) < self.queue_length and frame.get("prev"):
            prev = self._token2frame.get(frame["prev"])
            if prev is None or self.frames[prev]["scene_token"] != frame["scene_token"]:
                break
            out.append(prev)
            frame = self.frames[prev]
        return out[::-1]

    def get_data_info(self, idx: int) -> dict:
        entry = self.data_list[idx]
        history_only = bool(entry.get("history_only", False))
        # a history-only item is streamed: its previous frame is in the model's cache already
        frames = [entry["frame"]] if history_only else self.queue_indices(entry["frame"])
        queue = [copy.deepcopy(self.frames[i]) for i in frames]
        for info in queue:
            for cam in info["images"].values():
                cam["img_path"] = os.path.join(self.data_root, cam["img_path"])
        return {"queue": queue, "qa": copy.deepcopy(entry["qa"]), "sample_idx": idx,
                "queue_length": self.queue_length, "domain": self.domain, "history_only": history_only}

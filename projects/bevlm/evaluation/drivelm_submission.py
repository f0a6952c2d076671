"""mmengine metric that writes a DriveLM challenge submission for a questions-only test file.

The challenge withholds the answers of its test questions (``v1_1_val_nus_q_only.json``): a run
on them cannot be scored here, only written out. :class:`DriveLMSubmissionWriter` collects the
model's answers (``pred_answers``, keyed by the official index ``i`` that
``BEVDriveDataset(questions_file=...)`` gives each question) and writes, under
``outfile_prefix``:

* ``{prefix}.output.json``: ``[{"id", "question", "answer"}]`` in the file's official id order
  (what the official ``evaluation.py`` reads; score it with ``tools/eval_drivelm.py`` where the
  answers are known, e.g. on a val split made with ``tools/create_data.py drivelm-questions``);
* ``{prefix}.submission.json``: the same list under ``results`` with the fields of the
  challenge's ``prepare_submission.py`` (method, team, authors, email, institution, country).

Every question of the file must have an answer: a missing one stops the run with the ids named
(the official evaluator would raise ``KeyError`` on it).
"""
from __future__ import annotations

from typing import Any, Sequence

from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger

from ..datasets.drivelm_io import iter_test_questions, load_drivelm_questions
from ..registry import METRICS
from ..structures import scored_samples
from .drivelm_files import SUBMISSION_FIELDS, atomic_write_json, write_submission
from .drivelm_testset import DriveLMEvalError


@METRICS.register_module()
class DriveLMSubmissionWriter(BaseMetric):
    """Write ``output.json`` and ``submission.json`` for the questions of ``questions_file``.

    Args:
        questions_file: the questions-only test file the dataset asked (same file).
        outfile_prefix: prefix of the two files written (required).
        submission_info: values of the submission fields (see
            :data:`bevlm.evaluation.drivelm_files.SUBMISSION_FIELDS`).
        collect_device / prefix: as mmengine's ``BaseMetric``.
    """

    default_prefix = "submission"

    def __init__(self, questions_file: str, outfile_prefix: str | None = None,
                 submission_info: dict | None = None, collect_device: str = "cpu",
                 prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if not outfile_prefix:
            raise ValueError("DriveLMSubmissionWriter: outfile_prefix is required (where output.json and "
                             "submission.json go). Fix: set it, or run tools/test.py --submission")
        unknown = sorted(set(submission_info or {}) - set(SUBMISSION_FIELDS))
        if unknown:
            raise ValueError(f"DriveLMSubmissionWriter: unknown submission field(s) {unknown}. "
                             f"Fix: use {list(SUBMISSION_FIELDS)}")
        self.questions = load_drivelm_questions(questions_file)  # checked before any inference
        self.questions_file = questions_file
        self.outfile_prefix = outfile_prefix
        self.submission_info = dict(submission_info or {})

    def process(self, data_batch: Any, data_samples: Sequence) -> None:
        """Store each frame's ``scene_token``, ``token`` and ``pred_answers``."""
        for sample in scored_samples(data_samples):  # history-only frames are not asked
            if hasattr(sample, "to_dict"):
                sample = sample.to_dict()
            for key in ("scene_token", "token", "pred_answers"):
                if key not in sample:
                    raise DriveLMEvalError(f"DriveLMSubmissionWriter.process: data sample lacks '{key}'. Fix: "
                                           f"the model's predict() must return scene_token, token and pred_answers")
            self.results.append({"scene_token": sample["scene_token"], "token": sample["token"],
                                 "pred_answers": {int(i): str(a) for i, a in sample["pred_answers"].items()}})

    def compute_metrics(self, results: list) -> dict:
        """Write the two files; returns the number of frames and questions written."""
        answers: dict[str, str] = {}
        for r in results:
            for i, a in r["pred_answers"].items():
                answers[f"{r['scene_token']}_{r['token']}_{i}"] = a
        rows, missing = [], []
        frames = set()
        for scene_token, frame_token, i, _, item in iter_test_questions(self.questions):
            qid = f"{scene_token}_{frame_token}_{i}"
            frames.add((scene_token, frame_token))
            if qid not in answers:
                missing.append(qid)
                continue
            rows.append({"id": qid, "question": item["Q"], "answer": answers[qid]})
        if missing:
            shown = ", ".join(missing[:10]) + (f", ... ({len(missing) - 10} more)" if len(missing) > 10 else "")
            raise DriveLMEvalError(
                f"{self.questions_file}: {len(missing)} question(s) got no answer: {shown}. Fix: test on the "
                f"dataset built with questions_file={self.questions_file!r} (tools/test.py --submission does "
                f"so); a partial submission fails the official evaluator")
        atomic_write_json(rows, f"{self.outfile_prefix}.output.json")
        write_submission(rows, f"{self.outfile_prefix}.submission.json", self.submission_info)
        MMLogger.get_current_instance().info(
            f"DriveLM submission: {len(rows)} answers of {len(frames)} frames -> "
            f"{self.outfile_prefix}.output.json, {self.outfile_prefix}.submission.json")
        return {"questions": len(rows), "frames": len(frames)}

"""mmengine metric: the DriveLM challenge score plus per-family accuracy on the full QA graph.

Each data sample describes one key frame and the model's answers to (some of) its questions.
``compute_metrics`` builds the seeded challenge test set from the GT frames
(:mod:`.drivelm_testset`), picks the predictions of the tested questions, scores them exactly as
the official ``evaluation.py`` (:func:`.drivelm_official.evaluate`) and adds exact-match accuracy
per question family over every answered question of the frames.

Multiple-choice questions: in the challenge test set the perception "moving status" and the
behavior questions are multiple choice and graded against a letter. A model should be asked
the MC version (see :func:`.drivelm_testset.mc_questions_for_frame`, same ``seed``) and answer a
letter. ``accuracy`` (official) compares the raw answer with the letter. ``accuracy_normalised``
first maps an answer that is not a bare letter: surrounding whitespace is stripped, an answer
equal to one option's text becomes that option's letter, and ``"A."``/``"(A)"`` become ``"A"``.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, Sequence

from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger

from ..registry import METRICS
from ..structures import scored_samples
from ..structures.qa_families import STAGES, classify_question
from .drivelm_official import OpenAIJudge, evaluate
from .drivelm_files import atomic_write_json, write_predictions, write_test_eval
from .drivelm_testset import DriveLMEvalError, build_test_frame, iter_official_ids, mc_question_for

_LETTER_RE = re.compile(r"^\(?([A-D])[\.\)]?$")


def normalise_mc_answer(answer: str, qa: dict) -> str:
    """Map a free-form answer to an MC letter when unambiguous (see module doc).

    Args:
        answer: the model's answer.
        qa: the test QA (MC question with options appended); non-MC QA return ``answer``.

    Returns:
        The letter, or ``answer`` unchanged.
    """
    mc = mc_question_for(qa)
    if mc is None:
        return answer
    letter = mc.letter_of(answer)
    if letter is not None:
        return letter
    m = _LETTER_RE.match(answer.strip())
    return m.group(1) if m else answer


@METRICS.register_module()
class DriveLMMetric(BaseMetric):
    """DriveLM challenge metric (official non-GPT terms, exact) + per-family accuracy.

    Data samples (dicts, or objects with ``to_dict()``) need: ``scene_token``, ``token`` (frame),
    ``drivelm_frame`` (the raw DriveLM frame: ``key_object_infos``, ``QA`` per stage in official
    order, ``image_paths``) and ``pred_answers`` (full-frame QA index ``i`` -> answer; ``i`` over
    perception+prediction+planning+behavior; MC questions answered as letters).

    Args:
        seed: seed of the MC options (must equal the one used to ask the model).
        outfile_prefix: if set, writes ``{prefix}.output.json``, ``{prefix}.test_eval.json`` and
            ``{prefix}.results.json``.
        judge_url: OpenAI-compatible endpoint for the GPT terms; None leaves them absent.
        judge_model: judge model name.
        judge_api_key_env: environment variable of the judge's key.
        collect_device: 'cpu' or 'gpu' (mmengine result collection).
        prefix: metric name prefix (default ``'drivelm'``).
    """

    default_prefix = "drivelm"

    def __init__(self, seed: int = 0, outfile_prefix: str | None = None, judge_url: str | None = None,
                 judge_model: str = "gpt-3.5-turbo", judge_api_key_env: str = "OPENAI_API_KEY",
                 collect_device: str = "cpu", prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.seed = seed
        self.outfile_prefix = outfile_prefix
        self.judge = OpenAIJudge(judge_url, judge_model, judge_api_key_env) if judge_url else None

    def process(self, data_batch: Any, data_samples: Sequence) -> None:
        """Store what ``compute_metrics`` needs from each frame.

        Args:
            data_batch: unused.
            data_samples: per frame, a dict (or data element) with the keys of the class doc.
        """
        for sample in scored_samples(data_samples):  # history-only frames are not scored
            if hasattr(sample, "to_dict"):
                sample = sample.to_dict()
            for key in ("scene_token", "token", "drivelm_frame", "pred_answers"):
                if key not in sample:
                    raise DriveLMEvalError(
                        f"DriveLMMetric.process: data sample lacks '{key}' (has {sorted(sample)}). Fix: the "
                        f"model's predict() must return samples carrying scene_token, token, drivelm_frame "
                        f"and pred_answers")
            frame = sample["drivelm_frame"]
            self.results.append({
                "scene_token": sample["scene_token"], "token": sample["token"],
                "frame": {k: frame[k] for k in ("key_object_infos", "QA", "image_paths") if k in frame},
                "pred_answers": {int(i): a for i, a in sample["pred_answers"].items()},
            })

    def compute_metrics(self, results: list) -> dict:
        """Score all frames.

        Args:
            results: the stored per-frame dicts of :meth:`process`.

        Returns:
            Flat dict: ``accuracy``, ``accuracy_ungated``, ``accuracy_normalised``, ``Bleu_1..4``,
            ``ROUGE_L``, ``CIDEr``, ``language_score``, ``match_f1``, ``chatgpt``/``match``/``final``
            (None without a judge), ``gpt_free_final``, ``gpt_free_ungated`` (with ``accuracy_ungated``;
            not official), ``missing_gpt_weight``, ``tag{t}_kept``/``tag{t}_skipped``,
            ``full_accuracy``, ``full_answered``, ``full_total`` and ``family/<name>`` accuracies.
        """
        test: dict = OrderedDict()
        pred: dict[str, str] = {}
        family_hits: dict[str, list[float]] = {}
        full_total = 0
        for (scene, token), (frame, answers) in self._merge_frames(results).items():
            where = f"DriveLMMetric: scene {scene} / frame {token}"
            test_frame, source_index = build_test_frame(frame, scene, token, self.seed, where)
            test.setdefault(scene, {"key_frames": OrderedDict()})["key_frames"][token] = test_frame
            mc_by_full_index = {}
            missing = []
            frame_ids = iter_official_ids({scene: {"key_frames": {token: test_frame}}})
            for (qid, qa), i in zip(frame_ids, source_index):
                if i in answers:
                    pred[qid] = answers[i]
                else:
                    missing.append(f"{qid} (frame QA index {i})")
                mc = mc_question_for(qa)
                if mc is not None:
                    mc_by_full_index[i] = mc
            if missing:
                raise DriveLMEvalError(
                    f"{where}: no prediction for the test question(s) {', '.join(missing)}. Fix: answer "
                    f"these frame QA indices in pred_answers (the challenge test set always asks them)")
            full_total += self._family_accuracy(frame, answers, mc_by_full_index, family_hits)

        report = evaluate(pred, test, gpt_judge=self.judge, source="DriveLMMetric predictions")
        norm_acc = []
        for item in report["items"]:
            if item["kept"] and 0 in item["tag"]:
                qa = {"Q": item["question"], "A": item["gt"]}
                norm_acc.append(float(normalise_mc_answer(item["answer"], qa).strip() == item["gt"]))
        metrics: dict[str, Any] = {
            "accuracy": report["accuracy"],
            # every tag-0 question, skipped by the graph gating or not: the same questions for every
            # model (the official accuracy's set grows with the first answer's matched objects)
            "accuracy_ungated": report["accuracy_ungated"],
            "accuracy_normalised": sum(norm_acc) / len(norm_acc) if norm_acc else None,
        }
        for key, value in (report["language"] or {}).items():
            metrics[key] = value
        for key in ("language_score", "match_f1", "chatgpt", "match", "gpt_free_final", "gpt_free_ungated",
                    "missing_gpt_weight", "final"):
            metrics[key] = report[key]
        for tag, c in report["counts"].items():
            metrics[f"{tag}_kept"] = c["kept"]
            metrics[f"{tag}_skipped"] = c["skipped"]
        answered = sum(len(v) for v in family_hits.values())
        metrics["full_accuracy"] = (sum(sum(v) for v in family_hits.values()) / answered) if answered else None
        metrics["full_answered"] = answered
        metrics["full_total"] = full_total
        for name in sorted(family_hits):
            metrics[f"family/{name}"] = sum(family_hits[name]) / len(family_hits[name])
        if report["final"] is None:
            MMLogger.get_current_instance().info(
                f"DriveLM: absent terms ({', '.join(report['absent'])}); 'final' is None. "
                f"'gpt_free_final' covers {1 - report['missing_gpt_weight']:.1f} of the official weight")
        if self.outfile_prefix:
            write_test_eval(test, f"{self.outfile_prefix}.test_eval.json")
            write_predictions(pred, test, f"{self.outfile_prefix}.output.json")
            atomic_write_json({"metrics": metrics, "report": report}, f"{self.outfile_prefix}.results.json")
        return metrics

    @staticmethod
    def _merge_frames(results: list) -> dict:
        """Group stored samples by (scene, frame), uniting their answers (a dataset may yield one
        sample per question); the first-seen order of frames is kept.

        Returns:
            dict ``(scene_token, token) -> (frame, {full QA index: answer})``.
        """
        merged: dict = OrderedDict()
        for res in results:
            key = (res["scene_token"], res["token"])
            frame, answers = merged.setdefault(key, (res["frame"], {}))
            for i, answer in res["pred_answers"].items():
                if i in answers and answers[i] != answer:
                    raise DriveLMEvalError(
                        f"DriveLMMetric: scene {key[0]} / frame {key[1]}: two different answers for frame QA "
                        f"index {i} ({answers[i]!r} vs {answer!r}). Fix: answer each question once")
                answers[i] = answer
        return merged

    @staticmethod
    def _family_accuracy(frame: dict, answers: dict[int, str], mc_by_full_index: dict,
                         family_hits: dict[str, list[float]]) -> int:
        """Exact match after ``.strip()`` per question family over the frame's answered QA.

        An MC-tested question (answered with a letter) counts as correct when the answer equals the
        correct letter or the free-form GT.

        Returns:
            The number of QA in the frame.
        """
        i = 0
        for stage in STAGES:
            for qa in frame["QA"].get(stage, []):
                if i in answers:
                    answer, gt = answers[i].strip(), qa["A"].strip()
                    ok = answer == gt or (i in mc_by_full_index and answer == mc_by_full_index[i].answer)
                    family_hits.setdefault(classify_question(qa["Q"], stage), []).append(float(ok))
                i += 1
        return i

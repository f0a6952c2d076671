"""Evaluation: the DriveLM challenge metric (official, exact for non-GPT terms), planning and
efficiency metrics. Importing this package registers the metrics in ``bevlm``'s METRICS."""
from .drivelm_metric import DriveLMMetric, normalise_mc_answer
from .drivelm_official import MatchResult, OpenAIJudge, evaluate, language_score, language_scores, match_result
from .drivelm_files import (SUBMISSION_FIELDS, atomic_write_json, check_prediction_ids, family_exact_match,
                            load_predictions, load_test_eval, splice_family, strip_answers, write_predictions,
                            write_submission, write_test_eval)
from .drivelm_submission import DriveLMSubmissionWriter
from .drivelm_testset import (BEHAVIOR_OPTIONS, MOVING_STATUS_OPTIONS, DriveLMEvalError, MCQuestion,
                              build_test_eval, build_test_frame, iter_official_ids, mc_question_for,
                              mc_questions_for_frame, select_frame_qa)
from .efficiency_metric import EfficiencyMetric
from .nuscenes_det_metric import NuScenesDetMetric
from .planning_metric import PlanningMetric

__all__ = [
    "DriveLMMetric", "PlanningMetric", "EfficiencyMetric", "NuScenesDetMetric", "normalise_mc_answer",
    "MatchResult", "OpenAIJudge", "evaluate", "language_score", "language_scores", "match_result",
    "BEHAVIOR_OPTIONS", "MOVING_STATUS_OPTIONS", "DriveLMEvalError", "MCQuestion", "build_test_eval",
    "build_test_frame", "iter_official_ids", "load_predictions", "load_test_eval", "mc_question_for",
    "mc_questions_for_frame", "select_frame_qa", "splice_family", "family_exact_match", "write_predictions",
    "write_test_eval",
    "atomic_write_json", "check_prediction_ids", "DriveLMSubmissionWriter", "SUBMISSION_FIELDS",
    "strip_answers", "write_submission",
]

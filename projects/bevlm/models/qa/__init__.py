"""The QA side of the model: the round format, the QA-round policy and the frame decoders.

Training (:func:`blocks_for_policy` in ``BEVVLM.loss``) and testing (:func:`answer_frame` in
``BEVVLM.predict``) both use these, so they live in the model layer.
"""
from .decoding import FrameDecoder, GreedyBatchDecoder, GreedySequentialDecoder, build_frame_decoder
from .format import PromptTemplate
from .multiple_choice import OptionPrior, choose_by_likelihood, is_multiple_choice, score_pairs
from .policy import (POLICY_MODES, STAGE_ROUNDS, FrameAnswers, QAPolicy, answer_frame, apply_system_prompt,
                     blocks_for_policy, budget_shortfalls)

__all__ = ["OptionPrior", "choose_by_likelihood", "is_multiple_choice", "score_pairs", "FrameDecoder", "GreedyBatchDecoder", "GreedySequentialDecoder", "build_frame_decoder", "PromptTemplate",
           "POLICY_MODES", "STAGE_ROUNDS", "FrameAnswers", "QAPolicy", "answer_frame", "apply_system_prompt",
           "blocks_for_policy", "budget_shortfalls"]

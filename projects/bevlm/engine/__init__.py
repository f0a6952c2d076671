from .checkpoint import (CheckpointError, CheckpointMismatchError, PlainCheckpointHook, load_checkpoint_file,
                         load_model_weights, register_checkpoint_safe_globals)
from .dist import decoder_layer_wrap_policy
from .hooks import (AnswerBudgetCheckHook, EgoPriorFitHook, InferenceVariantHook, ParamChecksumHook,
                    PostTrainingQuantHook, extra_fit_frames)

register_checkpoint_safe_globals()

__all__ = ["load_checkpoint_file", "load_model_weights", "CheckpointError", "CheckpointMismatchError",
           "PlainCheckpointHook", "register_checkpoint_safe_globals", "ParamChecksumHook", "PostTrainingQuantHook",
           "InferenceVariantHook", "AnswerBudgetCheckHook", "EgoPriorFitHook", "extra_fit_frames",
           "decoder_layer_wrap_policy"]

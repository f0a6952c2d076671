from .checkpoint import load_checkpoint_file, register_checkpoint_safe_globals
from .hooks import InferenceVariantHook, ParamChecksumHook, PostTrainingQuantHook

register_checkpoint_safe_globals()

__all__ = ["load_checkpoint_file", "register_checkpoint_safe_globals", "ParamChecksumHook", "PostTrainingQuantHook",
           "InferenceVariantHook"]

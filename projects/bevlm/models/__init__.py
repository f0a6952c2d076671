"""Model components; importing this package registers them all in ``bevlm.registry.MODELS``."""
from . import backbones, bev, detectors, heads, llm, necks, projectors  # noqa: F401
from .data_preprocessor import BEVVLMDataPreprocessor
from .detectors import BEVVLM

__all__ = ["BEVVLM", "BEVVLMDataPreprocessor"]

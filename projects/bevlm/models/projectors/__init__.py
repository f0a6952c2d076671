"""Projectors from BEV (or camera) tokens to LLM visual tokens."""
from .pool_mlp import PoolMLPProjector
from .resampler import ResamplerProjector
from .token_mlp import TokenMLPProjector

__all__ = ["PoolMLPProjector", "ResamplerProjector", "TokenMLPProjector"]

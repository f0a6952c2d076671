"""Projectors from BEV (or camera) tokens to LLM visual tokens."""
from .pool_mlp import PoolMLPProjector
from .resampler import ResamplerProjector

__all__ = ["PoolMLPProjector", "ResamplerProjector"]

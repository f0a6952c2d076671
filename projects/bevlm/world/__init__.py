"""Procedural mini world: a nuScenes-format database with rendered cameras and DriveLM QA.

Usage::

    from bevlm.world import WorldConfig, generate_world
    summary = generate_world("data/mini_world", num_scenes=12, seed=0)
"""
from .config import WorldConfig
from .drivelm_qa import FAMILIES, behavior_universe
from .generate import generate_world

__all__ = ["WorldConfig", "generate_world", "FAMILIES", "behavior_universe"]

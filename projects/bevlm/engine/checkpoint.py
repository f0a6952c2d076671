"""The one place where checkpoint loading policy lives.

torch >= 2.6 defaults ``torch.load(weights_only=True)``; mmengine 0.10.7 calls ``torch.load``
without the argument, so resuming its own checkpoints fails with
``Unsupported global: mmengine.logging.history_buffer.HistoryBuffer``. Instead of turning the
safe unpickler off, we keep ``weights_only=True`` and allow-list exactly the (data-only) types
that mmengine and this package put into their checkpoints. Third-party weights should come as
safetensors (see :class:`bevlm.models.backbones.TimmBackbone`).
"""
from __future__ import annotations

import collections

import numpy as np
import torch

_REGISTERED = False


def _safe_types() -> list:
    from mmengine.config.config import ConfigDict
    from mmengine.logging.history_buffer import HistoryBuffer

    types = [HistoryBuffer, ConfigDict, collections.OrderedDict, collections.defaultdict,
             np.ndarray, np.dtype, np.core.multiarray._reconstruct if hasattr(np, "core") else None,
             np.core.multiarray.scalar if hasattr(np, "core") else None]
    for name in ("float64", "float32", "int64", "int32", "bool_", "uint8"):
        dt = getattr(np, name)
        types.append(dt)
        types.append(type(np.dtype(dt)))
    try:  # numpy >= 2 moved the pickle helpers
        from numpy._core.multiarray import _reconstruct, scalar
        types += [_reconstruct, scalar]
    except ImportError:  # pragma: no cover
        pass
    return [t for t in types if t is not None]


def register_checkpoint_safe_globals() -> None:
    """Allow-list mmengine's checkpoint types for ``torch.load(weights_only=True)`` (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    torch.serialization.add_safe_globals(_safe_types())
    _REGISTERED = True


def load_checkpoint_file(path: str, map_location="cpu") -> dict:
    """Load one of this package's checkpoints with the safe unpickler."""
    register_checkpoint_safe_globals()
    return torch.load(path, map_location=map_location, weights_only=True)

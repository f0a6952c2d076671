"""The one place where checkpoint loading policy lives.

torch >= 2.6 defaults ``torch.load(weights_only=True)``; mmengine 0.10.7 calls ``torch.load``
without the argument, so resuming its own checkpoints fails (``Unsupported global:
mmengine.logging.history_buffer.HistoryBuffer``, then numpy scalars of the message hub, which
pickle through ``builtins.getattr``). The policy:

1. load with ``weights_only=True`` and an allow-list of the data-only types mmengine and this
   package store (most model-only files load here);
2. otherwise, scan the pickle's globals *without executing it*; if every global is on the
   trusted list of what mmengine/torch/numpy write into a training checkpoint, load it with the
   full unpickler; anything else is refused with an error naming the offending globals.

Third-party weights should come as safetensors (see :class:`bevlm.models.backbones.TimmBackbone`).
The policy is installed as mmengine's loader for local files, so ``--resume`` and ``load_from``
use it too.
"""
from __future__ import annotations

import collections
import io
import pickle
import pickletools
import zipfile

import numpy as np
import torch

_REGISTERED = False

#: Globals a checkpoint written by mmengine's CheckpointHook / Runner may contain.
TRUSTED_GLOBALS = frozenset({
    "collections OrderedDict", "collections defaultdict", "builtins getattr", "__builtin__ getattr",
    "builtins set", "builtins slice", "_codecs encode",
    "torch._utils _rebuild_tensor_v2", "torch._utils _rebuild_parameter", "torch FloatStorage",
    "torch LongStorage", "torch IntStorage", "torch BoolStorage", "torch HalfStorage",
    "torch BFloat16Storage", "torch DoubleStorage", "torch ByteStorage", "torch._utils _rebuild_tensor",
    "torch float32", "torch float16", "torch bfloat16", "torch int64", "torch device",
    "numpy.core.multiarray _reconstruct", "numpy._core.multiarray _reconstruct", "numpy ndarray",
    "numpy dtype", "numpy.core.multiarray scalar", "numpy._core.multiarray scalar",
    "numpy.dtypes Float64DType", "numpy.dtypes Float32DType", "numpy.dtypes Int64DType",
    "mmengine.logging.history_buffer HistoryBuffer", "mmengine.config.config ConfigDict",
})


class UntrustedCheckpointError(pickle.UnpicklingError):
    """A checkpoint contains Python globals outside the trusted list."""


def _safe_types() -> list:
    from mmengine.config.config import ConfigDict
    from mmengine.logging.history_buffer import HistoryBuffer

    types = [HistoryBuffer, ConfigDict, collections.OrderedDict, collections.defaultdict, np.ndarray, np.dtype]
    for name in ("float64", "float32", "int64", "int32", "bool_", "uint8"):
        dt = getattr(np, name)
        types += [dt, type(np.dtype(dt))]
    try:  # numpy >= 2 moved the pickle helpers
        from numpy._core.multiarray import _reconstruct, scalar
        types += [_reconstruct, scalar]
    except ImportError:  # pragma: no cover
        pass
    return types


def register_checkpoint_safe_globals() -> None:
    """Allow-list mmengine's data-only checkpoint types; install the loader (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    torch.serialization.add_safe_globals(_safe_types())
    from mmengine.runner.checkpoint import CheckpointLoader

    CheckpointLoader.register_scheme(prefixes="", force=True)(_mmengine_local_loader)
    _REGISTERED = True


def pickle_globals(path: str) -> set[str]:
    """The ``module name`` globals referenced by a torch zip checkpoint, read without unpickling."""
    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(io.BytesIO(data)):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            strings.append(arg)
        elif op.name == "GLOBAL":
            found.add(arg)
        elif op.name == "STACK_GLOBAL":
            found.add(" ".join(strings[-2:]))
    return found


def load_checkpoint_file(path: str, map_location="cpu") -> dict:
    """Load a checkpoint under the policy of this module (see the module docstring)."""
    register_checkpoint_safe_globals()
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        untrusted = sorted(pickle_globals(path) - TRUSTED_GLOBALS)
        if untrusted:
            raise UntrustedCheckpointError(
                f"{path}: refusing to unpickle globals {untrusted}. Fix: load only checkpoints written by "
                f"this codebase, or convert third-party weights to safetensors") from None
        return torch.load(path, map_location=map_location, weights_only=False)


def _mmengine_local_loader(filename, map_location=None):
    import os

    if not os.path.isfile(filename):
        raise FileNotFoundError(f"{filename} can not be found.")
    return load_checkpoint_file(filename, map_location=map_location)

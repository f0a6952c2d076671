"""The one place where checkpoint loading policy lives: no checkpoint can run code.

Every checkpoint loads with ``torch.load(weights_only=True)`` and nothing else: tensors, plain
containers, strings and numbers, plus the few data-only types allow-listed below. There is no
fallback to the full unpickler, so a file whose pickle names any other global (``os.system``, or
``builtins.getattr`` reaching it) is refused before it runs.

For mmengine's own training checkpoints to load that way, :class:`PlainCheckpointHook` (in
``configs/_base_/default_runtime.py``) turns what mmengine stores beside the weights into plain
types before saving: numpy scalars become Python numbers, and each ``HistoryBuffer`` of the message
hub becomes a tagged dict of lists, rebuilt by :func:`load_checkpoint_file` on loading (so
``--resume`` gets its log history back).

Remote checkpoints (``http://``, ``s3://``, ``open-mmlab://``, ...) are refused: mmengine's remote
loaders unpickle with ``weights_only=False``. Download the file, then pass its local path.

:func:`load_model_weights` loads weights into a built model and stops, naming the checkpoint, the
config and the first mismatched keys, when they do not fit (``allow_partial`` to load what fits).
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import pickletools
import zipfile

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging.history_buffer import HistoryBuffer

from bevlm.registry import HOOKS
from bevlm.utils import atomic_write

_REGISTERED = False
#: Marks a message-hub ``HistoryBuffer`` stored as plain lists.
HISTORY_TAG = "__history_buffer__"
#: Schemes of mmengine's remote checkpoint loaders (all unpickle without ``weights_only``).
REMOTE_PREFIXES = ("http://", "https://", "s3://", "open-mmlab://", "openmmlab://", "mmcls://",
                   "torchvision://", "pavi://", "modelzoo://", "petrel://")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message names the file and the fix."""


class UntrustedCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A checkpoint names Python globals outside the data-only allow-list."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint's keys or shapes do not fit the model its config builds."""


def _safe_types() -> list:
    """Data-only types a ``weights_only`` load may rebuild (beyond tensors and plain containers)."""
    from mmengine.config.config import ConfigDict

    return [collections.OrderedDict, collections.defaultdict, ConfigDict]


def register_checkpoint_safe_globals() -> None:
    """Allow-list the data-only types; install the local and remote loaders (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    torch.serialization.add_safe_globals(_safe_types())
    from mmengine.runner.checkpoint import CheckpointLoader

    CheckpointLoader.register_scheme(prefixes="", force=True)(_mmengine_local_loader)
    CheckpointLoader.register_scheme(prefixes=REMOTE_PREFIXES, force=True)(_refuse_remote)
    _REGISTERED = True


def pickle_globals(path: str) -> set[str]:
    """The ``module name`` globals a checkpoint names (torch zip or legacy format), read without
    unpickling (best effort: for the error message only; the refusal itself is ``weights_only``'s)."""
    try:
        with zipfile.ZipFile(path) as z:
            streams = [z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))]
    except (zipfile.BadZipFile, StopIteration):
        with open(path, "rb") as f:  # the legacy format: several pickles back to back
            streams = [f.read()]
    found = set()
    for data in streams:
        buf, strings = io.BytesIO(data), []
        for _ in range(8):
            try:
                for op, arg, _ in pickletools.genops(buf):
                    if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                        strings.append(arg)
                    elif op.name == "GLOBAL":
                        found.add(arg)
                    elif op.name == "STACK_GLOBAL":
                        found.add(" ".join(strings[-2:]))
            except Exception:  # a malformed or finished stream: report what was read
                break
    return found


def _plain(value):
    """``value`` with numpy scalars / arrays and message-hub buffers turned into plain types."""
    if isinstance(value, HistoryBuffer):
        return {HISTORY_TAG: True, "max_length": int(value.max_length),
                "log_history": [float(v) for v in value._log_history],
                "count_history": [float(v) for v in value._count_history]}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, collections.OrderedDict):
        return collections.OrderedDict((k, _plain(v)) for k, v in value.items())
    if isinstance(value, dict):
        return type(value)({k: _plain(v) for k, v in value.items()}) if type(value) is dict else \
            {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def to_plain_checkpoint(checkpoint: dict) -> dict:
    """Turn ``meta`` and ``message_hub`` of an mmengine checkpoint into plain types, in place."""
    for key in ("meta", "message_hub"):
        if key in checkpoint:
            checkpoint[key] = _plain(checkpoint[key])
    return checkpoint


def _restore(value):
    if isinstance(value, dict):
        if value.get(HISTORY_TAG):
            buf = HistoryBuffer(max_length=value["max_length"])
            buf._log_history = np.asarray(value["log_history"], dtype=np.float64)
            buf._count_history = np.asarray(value["count_history"], dtype=np.float64)
            return buf
        for k, v in value.items():
            value[k] = _restore(v)
    return value


def check_checkpoint_path(path: str) -> None:
    """The cheap checks, before any work: a local, existing, non-empty file.

    Raises:
        CheckpointError: a remote path, a missing or an empty file (named, with the fix).
    """
    if str(path).startswith(REMOTE_PREFIXES):
        _refuse_remote(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found. Fix: pass the path of a .pth file (e.g. "
                              f"$(cat WORK_DIR/last_checkpoint))")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: the checkpoint file is empty (an interrupted save?). Fix: use an "
                              f"earlier checkpoint of the work dir")


def load_checkpoint_file(path: str, map_location="cpu") -> dict:
    """Load a local checkpoint with ``weights_only=True`` (see the module docstring).

    Raises:
        CheckpointError: a remote path, a missing / empty / truncated / foreign file (named).
        UntrustedCheckpointError: the pickle names globals outside the allow-list.
    """
    register_checkpoint_safe_globals()
    check_checkpoint_path(path)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        names = sorted(pickle_globals(path))
        if not names:
            raise CheckpointError(f"{path}: not a readable torch checkpoint (the safe loader refused it: "
                                  f"{str(e).splitlines()[-1][:200]}). Fix: the file is corrupt or of another "
                                  f"format; use an earlier checkpoint or re-save it") from None
        raise UntrustedCheckpointError(
            f"{path}: refusing to unpickle it: it names Python globals beyond tensors and plain data "
            f"({', '.join(names[:8])}). Loading it could run code. Fix: load only checkpoints "
            f"this codebase wrote (PlainCheckpointHook), or convert third-party weights to safetensors "
            f"({str(e).splitlines()[0][:200]})") from None
    except Exception as e:  # noqa: BLE001  (random bytes fail anywhere in torch's reader)
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else ''}). Fix: the file is truncated or "
                              f"of another format; use an earlier checkpoint or re-save it") from None
    return _restore(checkpoint) if isinstance(checkpoint, dict) else checkpoint


def load_model_weights(model: torch.nn.Module, checkpoint: str, config: str = "the config",
                       allow_partial: bool = False, state: dict | None = None) -> tuple[list, list]:
    """Load ``checkpoint`` into ``model``, checking keys and shapes first.

    Args:
        model: the model the config builds.
        checkpoint: checkpoint path (``state_dict`` inside, or a bare state dict).
        config: the config's path, named in errors.
        allow_partial: load the keys that fit and return the rest instead of raising.
        state: the already loaded checkpoint dict (saves a second read).

    Returns:
        ``(missing, unexpected)`` keys (empty unless ``allow_partial``).

    Raises:
        CheckpointMismatchError: keys missing / unexpected or shapes differing (first ones named).
    """
    state = load_checkpoint_file(checkpoint) if state is None else state
    weights = state.get("state_dict", state)
    weights = {k.removeprefix("module."): v for k, v in weights.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in weights and hasattr(weights[k], "shape") and weights[k].shape != own[k].shape]
    if (missing or unexpected or shapes) and not allow_partial:
        parts = [f"{len(x)} {what} (first: {x[:3]})" for x, what in
                 ((missing, "keys missing from the checkpoint"), (unexpected, "unexpected keys"),
                  (shapes, "shape mismatches")) if x]
        raise CheckpointMismatchError(
            f"{checkpoint} does not fit the model of {config}: {'; '.join(parts)}. Fix: test with the config "
            f"the checkpoint was trained with (or allow a partial load explicitly)")
    fitting = {k: v for k, v in weights.items() if k in own and not (hasattr(v, "shape") and v.shape != own[k].shape)}
    model.load_state_dict(fitting, strict=False)
    return missing, unexpected


def _mmengine_local_loader(filename, map_location=None):
    return load_checkpoint_file(filename, map_location=map_location or "cpu")


def _refuse_remote(filename, map_location=None, **kwargs):
    raise CheckpointError(f"{filename}: remote checkpoints are refused (they would be unpickled without "
                          f"weights_only). Fix: download the file, check where it comes from, and pass its local path")


def check_required_weights(model: torch.nn.Module, weights: dict, checkpoint: str, config: str) -> None:
    """Raise when a partial load (a training's ``load_from``) misses a part the model can only get from a
    checkpoint: the keys under each prefix of ``model.weights_from_checkpoint`` (e.g. the frozen
    stage-1 detection head that writes detections as text) must all be in ``weights`` with the model's
    shapes. A frozen part left at its random initialisation would train and test without an error.

    Raises:
        CheckpointMismatchError: naming the checkpoint, the config, the first missing / misshapen keys
            and the fix.
    """
    required = tuple(getattr(model, "weights_from_checkpoint", ()) or ())
    if not required:
        return
    weights = {k.removeprefix("module."): v for k, v in weights.items()}
    own = {k: v for k, v in model.state_dict().items() if k.startswith(required)}
    missing = [k for k in own if k not in weights]
    shapes = [f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(v.shape)}" for k, v in own.items()
              if k in weights and hasattr(weights[k], "shape") and weights[k].shape != v.shape]
    if missing or shapes:
        what = "; ".join(f"{len(x)} {w} (first: {x[:3]})" for x, w in
                         ((missing, "keys missing"), (shapes, "shape mismatches")) if x)
        raise CheckpointMismatchError(
            f"{checkpoint} does not hold the {', '.join(p.rstrip('.') for p in required)} that the model of "
            f"{config} keeps frozen from it: {what}. Fix: set load_from to the stage-1 checkpoint of a "
            f"detection config with the same head (configs/bev_det_pretrain.py: work_dirs/bev_det_pretrain/"
            f"iter_1000.pth), or turn the part off (--cfg-options model.det_head=None model.perception_text=None)")


@HOOKS.register_module()
class PlainCheckpointHook(Hook):
    """Save checkpoints in plain types (so they load with ``weights_only=True``) and, at test
    time, check that a loaded checkpoint fits the model.

    Args:
        strict_load: on ``after_load_checkpoint`` raise :class:`CheckpointMismatchError` when the
            checkpoint's keys or shapes differ from the model's (tools/test.py sets it; a
            training ``load_from`` of a stage-1 checkpoint loads partially on purpose).
    """

    priority = "VERY_LOW"  # after every hook that adds to the checkpoint

    def __init__(self, strict_load: bool = False) -> None:
        self.strict_load = strict_load

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        to_plain_checkpoint(checkpoint)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        source = getattr(runner, "_load_from", None) or runner.cfg.get("load_from") or "the checkpoint"
        config = getattr(runner.cfg, "filename", None) or "the config"
        self._loaded = True
        if self.strict_load:
            load_model_weights(model, source, config, state=checkpoint)
            return
        check_required_weights(model, checkpoint.get("state_dict", checkpoint), source, config)

    def before_train(self, runner) -> None:
        """A model with frozen parts that only a checkpoint can give (the stage-1 detection head that
        writes detections as text) must have loaded one: stop before the first iteration otherwise."""
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        required = tuple(getattr(model, "weights_from_checkpoint", ()) or ())
        if required and not getattr(self, "_loaded", False):
            config = getattr(runner.cfg, "filename", None) or "the config"
            raise CheckpointMismatchError(
                f"{config}: the model's {', '.join(p.rstrip('.') for p in required)} is frozen and must come "
                f"from a checkpoint, but load_from is {runner.cfg.get('load_from')!r} and nothing was loaded. "
                f"Fix: train stage 1 first (python tools/train.py configs/bev_det_pretrain.py) and set load_from "
                f"to its checkpoint, or turn the part off (--cfg-options model.det_head=None "
                f"model.perception_text=None)")


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` with crash-safe files (same arguments).

    * a checkpoint is written to a temp file in the work dir and renamed when complete, so a
      job killed mid-save never leaves a truncated ``iter_N.pth``;
    * ``last_checkpoint`` is written atomically, after the checkpoint it names is complete;
    * the oldest checkpoint beyond ``max_keep_ckpts`` is deleted only after the new one is
      complete (mmengine deletes it before saving, so a crash in between left one fewer).
    """

    def _save_checkpoint_with_step(self, runner, step, meta):
        to_delete = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                to_delete = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info("keep_ckpt_ids", list(self.keep_ckpt_ids))
        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info("last_ckpt", self.last_ckpt)
        tmp_name = f".tmp_{ckpt_filename}"
        runner.save_checkpoint(self.out_dir, tmp_name, self.file_client_args, save_optimizer=self.save_optimizer,
                               save_param_scheduler=self.save_param_scheduler, meta=meta, by_epoch=self.by_epoch,
                               backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        os.replace(os.path.join(self.out_dir, tmp_name), self.last_ckpt)
        atomic_write(os.path.join(runner.work_dir, "last_checkpoint"), lambda f: f.write(self.last_ckpt))
        if to_delete is not None:
            old = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(to_delete))
            if os.path.isfile(old):
                os.remove(old)


def find_resumable_checkpoint(work_dir: str, log=print) -> str | None:
    """The newest readable checkpoint of ``work_dir``: the one ``last_checkpoint`` names, else the
    newest ``iter_*.pth`` / ``epoch_*.pth`` that loads (a truncated or corrupt file is skipped, named).

    Returns:
        Its path, or None when the work dir holds no checkpoint at all (nothing to resume).

    Raises:
        CheckpointError: checkpoints exist but none is readable (every file tried is named).
    """
    candidates = []
    pointer = os.path.join(work_dir, "last_checkpoint")
    if os.path.isfile(pointer):
        with open(pointer, encoding="utf-8") as f:
            named = f.read().strip()
        if named:
            candidates.append(named)
    numbered = []
    if os.path.isdir(work_dir):
        for name in os.listdir(work_dir):
            stem, ext = os.path.splitext(name)
            prefix, _, number = stem.partition("_")
            if ext == ".pth" and prefix in ("iter", "epoch") and number.isdigit():
                numbered.append((int(number), os.path.join(work_dir, name)))
    candidates += [path for _, path in sorted(numbered, reverse=True) if path not in candidates]
    if not candidates:
        return None
    tried = []
    for path in candidates:
        try:
            load_checkpoint_file(path)
            return path
        except CheckpointError as e:
            tried.append(path)
            log(f"resume: skipping {path}: {str(e).splitlines()[0][:300]}")
    raise CheckpointError(f"{work_dir}: no readable checkpoint to resume from (tried {tried}). Fix: train "
                          f"without --resume, or pass a checkpoint: --resume PATH")

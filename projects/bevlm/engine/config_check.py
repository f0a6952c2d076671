"""Config overrides that mean what they say, and configs checked before any work starts.

Two failure modes this module removes:

* ``--cfg-options data_root=/other/`` changes the top-level variable only: the datasets were given
  its *value* when the config file was read, so they would keep the old path and train on the old
  data. :func:`merge_cfg_options` carries an override of a top-level variable to every value that
  was copied from it (leaves equal to the old value), and refuses when a value was *derived* from
  it (a longer string that contains it), naming those keys so the user overrides them too.
* A misspelt key (``num_layerz``) or a wrong type (``max_iters=abc``) fails late with a bare
  ``TypeError``, or never. :func:`check_config` walks every ``type=...`` dict of the config, finds
  the registered class, and checks the keys against its constructor (and simple annotated types:
  int, float, bool, str), naming the key path, the component and the valid keys.
"""
from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from mmengine.config import Config, ConfigDict

import bevlm.datasets  # noqa: F401  (registers the components that configs name)
import bevlm.evaluation  # noqa: F401
import bevlm.models  # noqa: F401
from bevlm import registry as _registry
from .checkpoint import PlainCheckpointHook  # noqa: F401  (registers the hooks of this package)
from .hooks import ParamChecksumHook  # noqa: F401


class ConfigError(ValueError):
    """A config (or an override of it) is wrong; the message names the key path and the fix."""


def _leaves(node: Any, path: str = ""):
    """``(key path, value)`` of every leaf below ``node`` (dicts and lists walked)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, node


def _set_path(cfg: Config, path: str, value: Any) -> None:
    node, parts = cfg, path.replace("]", "").replace("[", ".").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, (list, tuple)) else node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    elif isinstance(node, tuple):
        raise ConfigError(f"cannot carry an override into the tuple at {path}; override it directly")
    else:
        node[last] = value


def merge_cfg_options(cfg: Config, options: dict, source: str = "--cfg-options") -> list[str]:
    """Merge ``options`` into ``cfg``, carrying top-level variables to the values copied from them.

    Args:
        cfg: the loaded config (changed in place).
        options: ``{key path: value}`` as :class:`mmengine.config.DictAction` parses them.
        source: named in errors.

    Returns:
        The key paths that received a top-level override (for the log).

    Raises:
        ConfigError: a top-level override whose old value is part of a longer, derived string
            elsewhere (that value would silently keep the old one), unless that key is overridden
            in the same options.
    """
    carried = []  # (path, new value): applied only once every override has been checked
    explicit = set(options)
    for key, new in options.items():
        if "." in key or key not in cfg or isinstance(cfg[key], (dict, list, tuple)):
            continue
        old = cfg[key]
        if old == new or old is None or isinstance(old, bool):
            continue
        for path, value in _leaves(cfg.to_dict()):
            if path == key or path in explicit or any(path.startswith(e + ".") for e in explicit):
                continue
            if type(value) is type(old) and value == old:
                carried.append((path, new))
            elif isinstance(old, str) and isinstance(value, str) and len(old) >= 3 and old in value:
                raise ConfigError(
                    f"{source}: {key}={new!r} overrides a variable that {path}={value!r} was built from; that "
                    f"value would keep the old {old!r}. Fix: override {path} too (e.g. "
                    f"{path}={value.replace(old, str(new))!r})")
    for path, new in carried:
        _set_path(cfg, path, new)
    cfg.merge_from_dict(options)
    return [path for path, _ in carried]


#: Registries searched, in order, for a ``type`` name.
_REGISTRIES = ("MODELS", "DATASETS", "TRANSFORMS", "METRICS", "EVALUATOR", "HOOKS", "LOOPS", "OPTIMIZERS",
               "OPTIM_WRAPPERS", "PARAM_SCHEDULERS", "DATA_SAMPLERS", "TASK_UTILS", "LOG_PROCESSORS",
               "VISUALIZERS", "VISBACKENDS", "FUNCTIONS")


#: Keys that a builder consumes next to the component's own arguments, by key path.
_BUILDER_KEYS = {"optim_wrapper": frozenset({"paramwise_cfg", "constructor"})}


def _resolve(name: str):
    for reg_name in _REGISTRIES:
        reg = getattr(_registry, reg_name, None)
        if reg is None:
            continue
        cls = reg.get(name)
        if cls is not None:
            return cls
    return None


def _simple_type(annotation) -> tuple | None:
    """The accepted python types of a simple annotation (int / float / bool / str, Optional of them)."""
    if annotation in (int, float, bool, str):
        accepted = {annotation}
    else:
        args = typing.get_args(annotation)
        if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
            return None
        if not args or not all(a in (int, float, bool, str, type(None)) for a in args):
            return None
        accepted = set(args)
    if float in accepted:
        accepted.add(int)  # an int is a fine float
    return tuple(accepted)


def _check_component(node: dict, path: str, source: str) -> None:
    name = node.get("type")
    if not isinstance(name, str):
        return
    cls = _resolve(name)
    if cls is None or not inspect.isclass(cls):
        return
    try:
        sig = inspect.signature(cls.__init__)
        hints = typing.get_type_hints(cls.__init__)
    except (TypeError, ValueError, NameError):
        return
    params = {n: p for n, p in sig.parameters.items() if n != "self"}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # accepts anything: nothing to check
    valid = sorted(n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL)
    for key, value in node.items():
        if key == "type" or key.startswith("_") or key in _BUILDER_KEYS.get(path, ()):
            continue
        if key not in params:
            raise ConfigError(f"{source}: {path}.{key}: {name} has no argument {key!r}. Fix: use one of {valid}")
        accepted = _simple_type(hints.get(key))
        if accepted and value is not None and not (type(value) in accepted or
                                                   (bool not in accepted and int in accepted and
                                                    isinstance(value, int) and not isinstance(value, bool))):
            raise ConfigError(f"{source}: {path}.{key}={value!r} is a {type(value).__name__}; {name} takes "
                              f"{' or '.join(sorted(t.__name__ for t in accepted))}. Fix: give a value of that type")


def _walk(node: Any, path: str, source: str) -> None:
    if isinstance(node, dict):
        _check_component(node, path, source)
        for k, v in node.items():
            _walk(v, f"{path}.{k}" if path else str(k), source)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            _walk(v, f"{path}[{i}]", source)


def check_config(cfg: Config, source: str = "config") -> None:
    """Check every registered component of ``cfg`` (keys and simple types) before anything is built.

    Raises:
        ConfigError: a key the component does not take, or a value of the wrong simple type; the
            message names the key path, the component and the valid keys.
    """
    data = cfg.to_dict() if isinstance(cfg, (Config, ConfigDict)) else dict(cfg)
    _walk(data, "", source)


# --------------------------------------------------------------- load_from: the input it was trained on
def _resize_sizes(node: Any) -> list[tuple]:
    """``size`` of every ``ResizeMultiViewImages`` transform in a config node (dicts / lists)."""
    found = []
    if isinstance(node, (dict, ConfigDict)):
        if node.get("type") == "ResizeMultiViewImages" and node.get("size") is not None:
            found.append(tuple(node["size"]))
        for value in node.values():
            found += _resize_sizes(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            found += _resize_sizes(value)
    return found


def _resize_sizes_in_text(cfg_text: str, key: str = "train_dataloader") -> list[tuple]:
    """The same, read from a dumped config's text WITHOUT running it (``ast`` only: a checkpoint's
    text is data, not code). Only ``dict(type='ResizeMultiViewImages', size=(W, H))`` literals under
    the top-level assignment ``key = ...`` are read; anything else is ignored."""
    import ast

    try:
        tree = ast.parse(cfg_text)
    except SyntaxError:
        return []
    sizes = []
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == key for t in stmt.targets)):
            continue
        for node in ast.walk(stmt.value):
            if not isinstance(node, (ast.Call, ast.Dict)):
                continue
            if isinstance(node, ast.Call):
                items = {kw.arg: kw.value for kw in node.keywords if kw.arg}
            else:
                items = {k.value: v for k, v in zip(node.keys, node.values)
                         if isinstance(k, ast.Constant) and isinstance(k.value, str)}
            try:
                if ast.literal_eval(items.get("type", ast.Constant(None))) == "ResizeMultiViewImages" and "size" in items:
                    sizes.append(tuple(ast.literal_eval(items["size"])))
            except (ValueError, TypeError, SyntaxError):
                continue
    return sizes


def check_load_from_input(cfg: Config, source: str = "config") -> None:
    """A ``load_from`` checkpoint must have been trained on the image size this config feeds.

    A vision side trained at one resolution and fine-tuned at another loses what it learned (the
    stage-1 detector of configs/bev_det_pretrain.py, trained at 160x90 and fed 320x180: train-frame
    BEV heatmap loss 0.13 -> 2.05, about that of random weights; docs/research/perception_first.md).
    The checkpoint's saved config (``meta['cfg']``, read as text, never run) gives its training size.
    Checkpoints without a saved config, or configs without a resize, are not checked.

    Raises:
        ValueError: the two sizes differ (both named, with the fix).
    """
    path = cfg.get("load_from")
    if not path or not isinstance(path, str):
        return
    own = sorted(set(_resize_sizes(cfg.get("train_dataloader"))))
    if not own:
        return
    from .checkpoint import load_checkpoint_file

    meta = load_checkpoint_file(path).get("meta") or {}
    text = meta.get("cfg") if isinstance(meta, dict) else None
    if not isinstance(text, str):
        return
    theirs = sorted(set(_resize_sizes_in_text(text)))
    if theirs and theirs != own:
        fmt = lambda sizes: ", ".join(f"{w}x{h}" for w, h in sizes)  # noqa: E731
        raise ValueError(
            f"{source}: load_from={path} was trained on {fmt(theirs)} images (its saved config's train "
            f"pipeline, ResizeMultiViewImages size), but this config's train pipeline feeds {fmt(own)}: its "
            "pretrained vision side would lose what it learned. Fix: set the same `size` in both configs "
            "(configs/_base_/datasets/mini_world.py `img_size`), retrain the checkpoint at this size, or "
            "start from scratch with --cfg-options load_from=None")

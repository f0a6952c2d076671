"""Save / load a model whose Linears were replaced by :class:`QuantLinear4`.

One safetensors file holds the module's whole ``state_dict`` (packed codes,
fp16 scales/zeros, and the float tensors of everything not quantised; tied
tensors stored once) and, in its metadata under ``bevlm_quant``, a JSON
config naming each quantised layer and how it was quantised, plus (when given)
the quantisation settings (:mod:`.settings`, as their dict) so that
:func:`read_quant_settings` returns an equal settings object. Loading turns
the named ``nn.Linear`` layers of a freshly built skeleton into empty
``QuantLinear4`` layers and loads the state strictly.
"""
from __future__ import annotations

import json
import os

import torch
from torch import nn

from .apply import cast_lora_
from .int8_dynamic import is_int8_dynamic_linear
from .quant_embedding import QuantEmbedding4, TiedRowsHead
from .quant_embedding8 import QuantEmbedding8, TiedInt8Head
from .quant_linear import QuantLinear4
from .rotation import rotate_residual_
from .settings import QuantSettings, quant_settings

FORMAT_VERSION = 1
_META_KEY = "bevlm_quant"


def save_quantized(module: nn.Module, path: str, settings: QuantSettings | dict | None = None,
                   extra: dict | None = None) -> dict:
    """Write ``module`` (with ``QuantLinear4`` layers) to ``path`` atomically.

    Args:
        module: the quantised model.
        path: target ``.safetensors`` file (written to a temp file, then renamed).
        settings: the settings ``module`` was quantised with (object or dict form); stored as
            their dict under ``settings``, so :func:`read_quant_settings` and
            :func:`load_quantized` know how it was quantised (kernel, kept LoRA adapters' dtype).
        extra: other JSON-able facts stored with the config under ``extra``.

    Returns:
        the JSON config stored in the file's metadata.
    """
    from safetensors.torch import save_file

    if any(is_int8_dynamic_linear(m) for m in module.modules()):
        raise ValueError("save_quantized: int8 dynamic layers hold torch.ao packed weights that safetensors cannot "
                         "store; save the float model and re-apply quantize_model(method='int8_dynamic') (it takes "
                         "well under a second)")
    tables = (QuantEmbedding4, QuantEmbedding8)
    embeddings = {name: dict(method=m.method, group_size=m.group_size, num_embeddings=m.num_embeddings,
                             embedding_dim=m.embedding_dim, dtype=str(m.dtype).removeprefix("torch."),
                             zero_point=getattr(m, "zero_point", "int"), bits=8 if isinstance(m, QuantEmbedding8) else 4,
                             precise_rows=getattr(m, "precise_rows", 0))
                  for name, m in module.named_modules() if isinstance(m, tables)}
    table_of = {m.qweight.data_ptr(): name for name, m in module.named_modules() if isinstance(m, tables)}
    layers, tied_heads = {}, {}
    wrapped = {f"{name}.base" for name, m in module.named_modules() if isinstance(m, TiedRowsHead)}
    for name, m in module.named_modules():
        if isinstance(m, TiedInt8Head):
            tied_heads[name] = table_of[m.qweight.data_ptr()]
            continue
        if isinstance(m, TiedRowsHead):  # rebuilt by the table's tied_head(), its int4 base inside
            tied_heads[name] = table_of[m.base.qweight.data_ptr()]
            continue
        if name in wrapped:
            continue
        if isinstance(m, QuantLinear4):
            if m.qweight.data_ptr() in table_of:  # LM head tied to a quantised embedding
                tied_heads[name] = table_of[m.qweight.data_ptr()]
                continue
            layers[name] = dict(method=m.method, bits=4, group_size=m.group_size, in_features=m.in_features,
                                out_features=m.out_features, bias=m.bias is not None, zero_point=m.zero_point,
                                input_scale=m.input_scale is not None)
    if not layers and not embeddings:
        raise ValueError("save_quantized: the module has no QuantLinear4 layers; run quantize_model first")
    tensors, aliases, seen = {}, {}, {}
    for key, t in module.state_dict().items():
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if ident in seen:  # tied weights (e.g. embeddings / lm_head): store once
            aliases[key] = seen[ident]
            continue
        seen[ident] = key
        tensors[key] = t.detach().contiguous().cpu()
    config = dict(version=FORMAT_VERSION, layers=layers, aliases=aliases, embeddings=embeddings,
                  tied_heads=tied_heads, extra=dict(extra or {}))
    if settings is not None:
        config["settings"] = quant_settings(settings).to_dict()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        save_file(tensors, tmp, metadata={_META_KEY: json.dumps(config), "format": "pt"})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return config


def read_quant_config(path: str) -> dict:
    """The ``bevlm_quant`` JSON config of a file written by :func:`save_quantized`."""
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_quantized: {path} does not exist")
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    if _META_KEY not in meta:
        raise ValueError(f"{path} has no '{_META_KEY}' metadata: it was not written by save_quantized")
    config = json.loads(meta[_META_KEY])
    if config.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: quantised format version {config.get('version')} != {FORMAT_VERSION}")
    return config


def read_quant_settings(path: str) -> QuantSettings | None:
    """The quantisation settings stored by :func:`save_quantized` in ``path`` (``None``: the file
    was saved without settings).

    Args:
        path: a ``.safetensors`` file of :func:`save_quantized`.

    Returns:
        a settings object equal to the one saved, or ``None``.
    """
    stored = read_quant_config(path).get("settings")
    return quant_settings(stored) if stored is not None else None


def load_quantized(module_skeleton: nn.Module, path: str, kernel: str | None = None) -> nn.Module:
    """Load a file of :func:`save_quantized` into a model of the same architecture.

    Args:
        module_skeleton: a freshly built float model (any weights; same
            architecture and LoRA already merged if it was at save time);
            modified in place. With stored settings that kept the LoRA adapters
            (``keep_lora``), the skeleton's adapters are first cast to their
            ``lora_dtype``, the dtype they were saved in.
        path: the ``.safetensors`` file.
        kernel: int4 compute kernel for the restored layers (``None``: the stored
            settings' kernel, or ``'auto'`` without stored settings).

    Returns:
        ``module_skeleton`` with the quantised layers restored.
    """
    from safetensors.torch import load_file

    config = read_quant_config(path)
    settings = quant_settings(config["settings"]) if config.get("settings") is not None else None
    if kernel is None:
        kernel = getattr(settings, "kernel", "auto")
    if settings is not None and settings.keep_lora:
        cast_lora_(module_skeleton, settings.lora_dtype)
    if getattr(settings, "rotation", None) is not None:  # the saved codes are of the rotated weights
        rotate_residual_(module_skeleton, settings.rotation, settings.rotation_seed, mlp=settings.rotation_mlp)
    for name, spec in config.get("embeddings", {}).items():
        old = _submodule(module_skeleton, name, path)
        if not isinstance(old, (nn.Embedding, QuantEmbedding4, QuantEmbedding8)) or (
                old.num_embeddings, old.embedding_dim) != (
                spec["num_embeddings"], spec["embedding_dim"]):
            raise ValueError(f"{path}: layer {name!r} is {old} in the skeleton, but the file has a "
                             f"[{spec['num_embeddings']}, {spec['embedding_dim']}] embedding")
        device = next(iter(old.parameters() if isinstance(old, nn.Embedding) else old.buffers())).device
        if spec.get("bits", 4) == 8:
            new = QuantEmbedding8(spec["num_embeddings"], spec["embedding_dim"], spec["group_size"],
                                  getattr(torch, spec["dtype"]), spec["method"])
        else:
            new = QuantEmbedding4(spec["num_embeddings"], spec["embedding_dim"], spec["group_size"],
                                  getattr(torch, spec["dtype"]), spec["method"], spec.get("zero_point", "int"),
                                  spec.get("precise_rows", 0))
        _set_submodule(module_skeleton, name, new.to(device))
    for name, table in config.get("tied_heads", {}).items():
        _submodule(module_skeleton, name, path)
        _set_submodule(module_skeleton, name, module_skeleton.get_submodule(table).tied_head(kernel))
    for name, spec in config["layers"].items():
        old = _submodule(module_skeleton, name, path)
        if not isinstance(old, (nn.Linear, QuantLinear4)) or (old.in_features, old.out_features) != (
                spec["in_features"], spec["out_features"]):
            raise ValueError(f"{path}: layer {name!r} is {old} in the skeleton, but the file has a "
                             f"[{spec['out_features']}, {spec['in_features']}] Linear")
        new = QuantLinear4(spec["in_features"], spec["out_features"], spec["bias"], spec["group_size"], kernel,
                           spec["method"], spec.get("zero_point", "int"), bool(spec.get("input_scale", False)))
        device = next(iter(old.buffers() if isinstance(old, QuantLinear4) else old.parameters())).device
        _set_submodule(module_skeleton, name, new.to(device))
    state = load_file(path)
    for alias, source in config["aliases"].items():
        state[alias] = state[source]
    result = module_skeleton.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(f"{path}: state does not match the skeleton: missing {result.missing_keys[:5]}, "
                           f"unexpected {result.unexpected_keys[:5]}; build the same architecture/config")
    return module_skeleton


def _submodule(module: nn.Module, name: str, path: str) -> nn.Module:
    try:
        return module.get_submodule(name)
    except AttributeError as exc:
        raise KeyError(f"{path}: quantised layer {name!r} does not exist in the skeleton "
                       f"({type(module).__name__}); build the same architecture") from exc


def _set_submodule(module: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(module.get_submodule(parent_name) if parent_name else module, child, new)

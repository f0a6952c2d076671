"""LoRA adapters (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large
Language Models") on the causal LM through ``peft``, several named adapters on
one frozen base (multi-LoRA; one active at a time).

Saved in the peft format: one folder per adapter, ``<dir>/<name>/`` with
``adapter_config.json`` and ``adapter_model.safetensors``, loadable by
``peft.PeftModel.from_pretrained(base, '<dir>/<name>')``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import warnings

from torch import nn

from .architectures import lora_targets

_LORA_KEYS = {"r", "alpha", "dropout", "target_modules"}


def _lora_config(lora: dict, model_type: str = "llama"):
    from peft import LoraConfig, TaskType

    unknown = set(lora) - _LORA_KEYS
    if unknown:
        raise KeyError(f"HFCausalLM: unknown lora keys {sorted(unknown)}; allowed: {sorted(_LORA_KEYS)} "
                       "(fix the 'lora' dict of the llm config)")
    return LoraConfig(
        r=int(lora.get("r", 8)),
        lora_alpha=int(lora.get("alpha", 16)),
        lora_dropout=float(lora.get("dropout", 0.05)),
        target_modules=list(lora.get("target_modules") or lora_targets(model_type)),
        bias="none",
        task_type=TaskType.CAUSAL_LM)


def is_lora_param(name: str) -> bool:
    """True for parameters that belong to a LoRA adapter."""
    return "lora_" in name


def apply_lora(model: nn.Module, lora: dict, adapter_names: list[str]) -> nn.Module:
    """Wrap ``model`` with one LoRA adapter per name (the first is active).

    peft freezes the base weights; every adapter is left trainable (an
    inactive adapter simply receives no gradient).

    Args:
        model: a ``*ForCausalLM``; modified in place.
        lora: ``dict(r, alpha, dropout, target_modules)``; without ``target_modules`` the
            attention projections of the model's architecture (:data:`.architectures.LORA_TARGETS`).
        adapter_names: distinct adapter names, at least one.

    Returns:
        the ``peft.PeftModel``.
    """
    from peft import get_peft_model

    if not adapter_names or len(set(adapter_names)) != len(adapter_names):
        raise ValueError(f"HFCausalLM: adapter_names must be distinct and non-empty, got {adapter_names}")
    arch = getattr(getattr(model, "config", None), "model_type", None) or "llama"
    config = _lora_config(lora, arch)
    with warnings.catch_warnings():  # peft still calls a name transformers 5 deprecates
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(model, config, adapter_name=adapter_names[0])
    for name in adapter_names[1:]:
        peft_model.add_adapter(name, _lora_config(lora, arch))
    set_active_adapter(peft_model, adapter_names[0])
    return peft_model


def set_active_adapter(peft_model: nn.Module, name: str) -> None:
    """Make ``name`` the active adapter, keeping all adapters trainable."""
    if name not in peft_model.peft_config:
        raise KeyError(f"no LoRA adapter named {name!r}; adapters: {list(peft_model.peft_config)}")
    peft_model.set_adapter(name)
    # peft freezes the inactive adapters; keep their trainability stable so an
    # optimiser built once sees the same trainable set whichever is active.
    for pname, param in peft_model.named_parameters():
        if is_lora_param(pname):
            param.requires_grad_(True)


def save_adapters(peft_model: nn.Module, out_dir: str) -> None:
    """Save every adapter to ``out_dir/<name>/`` (peft format, atomically).

    Args:
        peft_model: the ``peft.PeftModel``.
        out_dir: target folder (created; existing adapter folders replaced).
    """
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    for name, config in peft_model.peft_config.items():
        tmp = tempfile.mkdtemp(prefix=f".{name}.", dir=out_dir)
        state = get_peft_model_state_dict(peft_model, adapter_name=name)
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()},
                  os.path.join(tmp, "adapter_model.safetensors"), metadata={"format": "pt"})
        config.save_pretrained(tmp)
        final = os.path.join(out_dir, name)
        if os.path.isdir(final):
            shutil.rmtree(final)
        os.replace(tmp, final)


def load_adapters(peft_model: nn.Module, in_dir: str) -> None:
    """Load the weights of every adapter of ``peft_model`` from ``in_dir``.

    Args:
        peft_model: the ``peft.PeftModel`` with the same adapter names and
            LoRA config as the saved one.
        in_dir: folder written by :func:`save_adapters`.
    """
    import json

    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    for name, config in peft_model.peft_config.items():
        folder = os.path.join(in_dir, name)
        weights = os.path.join(folder, "adapter_model.safetensors")
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"{weights} does not exist: adapter {name!r} was not saved in {in_dir} "
                                    f"(adapters expected: {list(peft_model.peft_config)})")
        with open(os.path.join(folder, "adapter_config.json")) as f:
            saved = json.load(f)
        if saved.get("r") != config.r or sorted(saved.get("target_modules") or []) != sorted(config.target_modules):
            raise ValueError(f"{folder}/adapter_config.json has r={saved.get('r')}, target_modules="
                             f"{saved.get('target_modules')}; the model has r={config.r}, target_modules="
                             f"{sorted(config.target_modules)}. Fix the 'lora' dict of the llm config")
        result = set_peft_model_state_dict(peft_model, load_file(weights), adapter_name=name)
        missing = [k for k in result.missing_keys if is_lora_param(k) and f".{name}." in k]
        if missing or result.unexpected_keys:
            raise RuntimeError(f"{weights}: missing LoRA keys {missing[:3]}..., unexpected "
                               f"{list(result.unexpected_keys)[:3]}")

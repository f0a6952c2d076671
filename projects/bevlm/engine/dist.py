"""Distributed training on CPU (gloo) with mmengine 0.10.7, and the FSDP wrap policy.

mmengine's ``init_dist`` calls ``torch.cuda.set_device`` unconditionally and its DDP wrapper passes
``device_ids=[LOCAL_RANK]``, both of which fail without a GPU. On CPU we initialise the gloo
process group ourselves (mmengine then skips ``init_dist``) and wrap with ``device_ids=None``; a
config with an FSDP ``strategy`` (mmengine's ``FlexibleRunner``) gets ``device_id='cpu'``, which
torch's FSDP accepts for CPU training with gloo (its default, the local GPU index, needs CUDA).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS

from bevlm.registry import OPTIM_WRAPPERS


def prepare_cpu_distributed(cfg) -> bool:
    """If launched by torchrun without CUDA, set up gloo and a CPU DDP wrapper in ``cfg``.

    Returns:
        True when the CPU path was taken.
    """
    if cfg.get("launcher", "none") != "pytorch" or torch.cuda.is_available():
        return False
    backend = cfg.get("env_cfg", {}).get("dist_cfg", {}).get("backend", "gloo")
    if backend != "gloo":
        raise ValueError(f"distributed training on CPU needs the gloo backend, got {backend!r}. "
                         f"Fix: --cfg-options env_cfg.dist_cfg.backend=gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    strategy = cfg.get("strategy")
    if strategy is not None:  # FlexibleRunner: the strategy wraps the model
        if "FSDP" in str(strategy.get("type", "")):
            strategy.setdefault("model_wrapper", dict(type="MMFullyShardedDataParallel"))
            strategy["model_wrapper"]["device_id"] = "cpu"
        return True
    cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None,
                                 find_unused_parameters=cfg.get("find_unused_parameters", False))
    return True


# in mmengine's own registry: its FSDP wrapper looks the policy up there (bevlm's child sees it too)
@MMENGINE_FUNCTIONS.register_module()
def decoder_layer_wrap_policy(module: torch.nn.Module, recurse: bool, nonwrapped_numel: int,
                              layer_suffixes: tuple[str, ...] = ("DecoderLayer", "GPTNeoXLayer")) -> bool:
    """FSDP auto-wrap policy: one FSDP unit per transformer block of the LLM.

    Every Hugging Face decoder block whose class name ends with one of ``layer_suffixes``
    (``LlamaDecoderLayer``, ``Qwen2DecoderLayer``, ``Phi3DecoderLayer``, ``PhiDecoderLayer``,
    ``Gemma2DecoderLayer``, ``GPTNeoXLayer``) is sharded and gathered on its own, so at most one
    block's full weights are materialised at a time; everything else (vision side, projector,
    embeddings, heads) stays in the root unit. Registered in mmengine's ``FUNCTIONS`` registry: configs
    name it as ``auto_wrap_policy=dict(type="decoder_layer_wrap_policy")``.
    """
    if recurse:
        return True
    return type(module).__name__.endswith(tuple(layer_suffixes))


def sharded_clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0, **_unused) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` for gradients sharded across ranks (FSDP ``FULL_SHARD``
    with ``use_orig_params=True``: each rank holds a disjoint part of every gradient).

    The local sums of ``|g|^p`` (or maxima for ``inf``) are all-reduced, so every rank clips with
    the norm of the whole gradient; plain ``clip_grad_norm_`` would clip each shard by its own
    norm, a different coefficient per rank. Returns the total norm (as torch does).
    """
    params = [p for p in parameters]
    grads = [p.grad for p in params if p.grad is not None]
    device = grads[0].device if grads else (params[0].device if params else torch.device("cpu"))
    norm_type = float(norm_type)
    if norm_type == float("inf"):
        total = torch.zeros((), dtype=torch.float64, device=device)
        for g in grads:
            if g.numel():
                total = torch.maximum(total, g.detach().abs().max().double())
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total, op=dist.ReduceOp.MAX)
    else:
        local = torch.zeros((), dtype=torch.float64, device=device)
        for g in grads:
            local += g.detach().double().norm(norm_type) ** norm_type
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(local, op=dist.ReduceOp.SUM)
        total = local ** (1.0 / norm_type)
    clip_coef = float(max_norm) / (float(total) + 1e-6)
    if clip_coef < 1.0:
        for g in grads:
            g.detach().mul_(clip_coef)
    return total.float()


def _use_sharded_clip(wrapper) -> None:
    if getattr(wrapper, "clip_func", None) is torch.nn.utils.clip_grad_norm_:
        wrapper.clip_func = sharded_clip_grad_norm_


@OPTIM_WRAPPERS.register_module()
class FSDPOptimWrapper(OptimWrapper):
    """mmengine's ``OptimWrapper`` for FSDP: ``clip_grad=dict(max_norm=...)`` clips by the norm
    of the whole (sharded) gradient (:func:`sharded_clip_grad_norm_`). Same arguments."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _use_sharded_clip(self)


@OPTIM_WRAPPERS.register_module()
class FSDPAmpOptimWrapper(AmpOptimWrapper):
    """mmengine's ``AmpOptimWrapper`` for FSDP: its sharded grad scaler (``use_fsdp=True``) and
    the global-norm gradient clipping of :class:`FSDPOptimWrapper`. Same arguments."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("use_fsdp", True)
        super().__init__(*args, **kwargs)
        _use_sharded_clip(self)


_FSDP_OPTIM_WRAPPERS = {"OptimWrapper": "FSDPOptimWrapper", "AmpOptimWrapper": "FSDPAmpOptimWrapper"}


def prepare_fsdp(cfg) -> bool:
    """For a config with an FSDP ``strategy``: switch its optim wrapper to the FSDP-aware one
    (``OptimWrapper`` -> :class:`FSDPOptimWrapper`, ``AmpOptimWrapper`` ->
    :class:`FSDPAmpOptimWrapper`). Returns whether the config uses FSDP.

    Raises:
        ValueError: another optim wrapper type (its gradient clipping would see one shard), or an
            LLM held in half precision (a sharded block mixing it with fp32 adapters).
    """
    strategy = cfg.get("strategy")
    if strategy is None or "FSDP" not in str(strategy.get("type", "")):
        return False
    llm_dtype = cfg.get("model", {}).get("llm", {}).get("torch_dtype", "float32")
    if llm_dtype not in (None, "float32"):
        raise ValueError(f"model.llm.torch_dtype={llm_dtype!r} with strategy {strategy.get('type')!r}: FSDP keeps one "
                         f"dtype per sharded block and the LoRA adapters train in fp32. Fix: "
                         f"model.llm.torch_dtype='float32' (sharded, so 1/N of it per process) and compute in "
                         f"bf16 through AmpOptimWrapper(dtype='bfloat16')")
    kind = cfg.optim_wrapper.get("type", "OptimWrapper")
    if kind in _FSDP_OPTIM_WRAPPERS.values():
        return True
    if kind not in _FSDP_OPTIM_WRAPPERS:
        raise ValueError(f"optim_wrapper.type={kind!r} is not supported with strategy {strategy.get('type')!r}: "
                         f"use OptimWrapper or AmpOptimWrapper (switched to their FSDP versions, which clip "
                         f"by the norm of the whole sharded gradient)")
    cfg.optim_wrapper.type = _FSDP_OPTIM_WRAPPERS[kind]
    return True

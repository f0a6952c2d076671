"""Distributed training on CPU (gloo) with mmengine 0.10.7.

mmengine's ``init_dist`` calls ``torch.cuda.set_device`` unconditionally and its DDP wrapper passes
``device_ids=[LOCAL_RANK]``, both of which fail without a GPU. On CPU we initialise the gloo
process group ourselves (mmengine then skips ``init_dist``) and wrap with ``device_ids=None``.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


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
    cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None,
                                 find_unused_parameters=cfg.get("find_unused_parameters", False))
    return True

"""Training hooks."""
from __future__ import annotations

import json
import os

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook

from bevlm.registry import HOOKS


@HOOKS.register_module()
class ParamChecksumHook(Hook):
    """Write a checksum of the trainable parameters of each rank after training.

    In DDP every rank must end with identical weights; comparing the files
    ``param_checksum_rank{r}.json`` checks that the gradient all-reduce really happened.
    """

    def after_train(self, runner) -> None:
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        params = [p.detach().double().flatten() for p in model.parameters() if p.requires_grad]
        flat = torch.cat(params)
        record = {"rank": get_rank(), "sum": float(flat.sum()), "abs_sum": float(flat.abs().sum()),
                  "numel": int(flat.numel())}
        path = os.path.join(runner.work_dir, f"param_checksum_rank{get_rank()}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.replace(path + ".tmp", path)

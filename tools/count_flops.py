"""FLOPs per frame of the encoder phase and the visual-prefix prefill of model configs, side by side.

    python tools/count_flops.py configs/bev_vlm.py configs/ablations/bev_vlm_camera.py \\
        configs/ablations/bev_vlm_camera-384.py configs/ablations/bev_vlm_blind.py [--out FILE.json]

Counted with FlopCounterMode (bevlm.models.pruning.flops.count_pruned_flops) on the first frame of
each config's test split, with the config's architecture and untrained weights (FLOPs do not depend
on the weights; no checkpoint is read). The encoder phase is everything before the LLM; the prefill
is the LLM pass over the prefix (visual tokens, ego token, trajectory queries), the part of the
prompt the vision path decides. Ratios are against the first config.

    python tools/count_flops.py configs/ablations/bev_vlm_300it_det-more-scenes.py \
        configs/ablations/bev_vlm_300it_det-more-scenes_plan-text.py --train-step [--out FILE.json]

``--train-step`` counts one training step instead: forward and backward of the loss on the first
``train_dataloader.batch_size`` items of each config's training split (train mode, untrained
weights, no optimizer step). For a model with the plan line (``model.plan_text``) the step is
also counted the way a gradient-checkpointed LLM runs it (no KV cache in a checkpointed forward:
one more pass over the prefix, without gradient, to write the line; the layers' recomputation
itself is not counted).
"""
from __future__ import annotations

import argparse
import json


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("configs", nargs="+")
    p.add_argument("--out", help="also write the rows as JSON here")
    p.add_argument("--train-step", action="store_true",
                   help="count one training step (forward + backward of the loss) instead of the test phases")
    args = p.parse_args()
    if args.train_step:
        return count_train_steps(args.configs, args.out)
    import torch
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope

    import bevlm.datasets  # noqa: F401  (registers the components the configs name)
    import bevlm.models  # noqa: F401
    from bevlm.models.pruning.flops import count_pruned_flops
    from bevlm.models.pruning.setting import PruningSetting
    from bevlm.registry import DATASETS, MODELS
    from bevlm.utils.file_io import atomic_write_json

    init_default_scope("bevlm")
    torch.manual_seed(0)
    rows = []
    for path in args.configs:
        cfg = Config.fromfile(path)
        model = MODELS.build(cfg.model).eval()
        item = DATASETS.build(cfg.test_dataloader.dataset)[0]
        data = model.data_preprocessor(pseudo_collate([item]), False)
        with torch.no_grad():
            row = count_pruned_flops(model, data["inputs"]["imgs"], data["data_samples"], PruningSetting())
        rows.append(dict(config=path, **row, total=row["encoder"] + row["prefill"]))
        print(f"{path}: visual tokens {row['visual_tokens']}, encoder {row['encoder'] / 1e9:.2f} GFLOPs, "
              f"prefill {row['prefill'] / 1e9:.2f} GFLOPs", flush=True)
    base = rows[0]
    print(f"\n| config | visual tokens | prefix tokens | encoder GFLOPs | prefill GFLOPs | total | "
          f"total / {base['config']} |\n|---|---|---|---|---|---|---|")
    for r in rows:
        r["total_ratio"] = r["total"] / base["total"]
        print(f"| {r['config']} | {r['visual_tokens']} | {r['prefix_tokens']} | {r['encoder'] / 1e9:.2f} | "
              f"{r['prefill'] / 1e9:.2f} | {r['total'] / 1e9:.2f} | {r['total_ratio']:.2f}x |")
    if args.out:
        atomic_write_json(rows, args.out)


class _NoModuleTracker:
    """Stands in for FlopCounterMode's module tracker: every FLOP counts under "Global" alone."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


def count_train_steps(paths: list, out: str | None) -> None:
    """FLOPs of one training step (forward + backward) of each config (see the module doc)."""
    import torch
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope
    from torch.utils.flop_counter import FlopCounterMode

    import bevlm.datasets  # noqa: F401  (registers the components the configs name)
    import bevlm.models  # noqa: F401
    from bevlm.registry import DATASETS, MODELS
    from bevlm.utils.file_io import atomic_write_json

    init_default_scope("bevlm")
    rows = []
    for path in paths:
        torch.manual_seed(0)
        cfg = Config.fromfile(path)
        model = MODELS.build(cfg.model).train()
        for module in model.modules():  # the recomputation is not counted
            if module is not model.llm and isinstance(getattr(module, "gradient_checkpointing", None), bool):
                module.gradient_checkpointing = False
        dataset = DATASETS.build(cfg.train_dataloader.dataset)
        items = [dataset[i] for i in range(int(cfg.train_dataloader.batch_size))]
        ways = [("cached", False)]
        if getattr(model, "plan_text", None) is not None:
            ways.append(("two-pass (checkpointing)", True))
        for way, two_pass in ways:
            model.llm.gradient_checkpointing = two_pass  # the forward_train path of the plan line only
            model.zero_grad(set_to_none=True)
            data = model.data_preprocessor(pseudo_collate(items), True)
            counter = FlopCounterMode(display=False)
            counter.mod_tracker = _NoModuleTracker()  # totals only: the per-module tracker's backward
            with counter:  # hooks fail on trainable leaf tensors passed between modules
                losses = model(**data, mode="loss")
                sum(v for k, v in losses.items() if "loss" in k).backward()
            rows.append(dict(config=path, way=way, batch=len(items), flops=int(counter.get_total_flops())))
            print(f"{path} ({way}): {rows[-1]['flops'] / 1e9:.1f} GFLOPs per step of {len(items)} items", flush=True)
    base = rows[0]
    print(f"\n| config | LLM pass | items | GFLOPs per step | / {base['config']} |\n|---|---|---|---|---|")
    for r in rows:
        r["ratio"] = r["flops"] / base["flops"]
        print(f"| {r['config']} | {r['way']} | {r['batch']} | {r['flops'] / 1e9:.1f} | {r['ratio']:.3f}x |")
    if out:
        atomic_write_json(rows, out)


if __name__ == "__main__":
    main()

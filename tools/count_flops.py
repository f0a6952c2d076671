"""FLOPs per frame of the encoder phase and the visual-prefix prefill of model configs, side by side.

    python tools/count_flops.py configs/bev_vlm.py configs/ablations/bev_vlm_camera.py \\
        configs/ablations/bev_vlm_camera-384.py configs/ablations/bev_vlm_blind.py [--out FILE.json]

Counted with FlopCounterMode (bevlm.models.pruning.flops.count_pruned_flops) on the first frame of
each config's test split, with the config's architecture and untrained weights (FLOPs do not depend
on the weights; no checkpoint is read). The encoder phase is everything before the LLM; the prefill
is the LLM pass over the prefix (visual tokens, ego token, trajectory queries), the part of the
prompt the vision path decides. Ratios are against the first config.
"""
from __future__ import annotations

import argparse
import json


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("configs", nargs="+")
    p.add_argument("--out", help="also write the rows as JSON here")
    args = p.parse_args()
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


if __name__ == "__main__":
    main()

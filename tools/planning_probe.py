"""Probe a trained checkpoint's planning without decoding any answer (minutes, not a full test).

``python tools/planning_probe.py CONFIG CHECKPOINT [--frames 16] [--out probe.json] [--cfg-options K=V ...]``

Two measurements:

1. **Teacher-forced losses** (the training losses, no gradient) on ``--frames`` evenly spaced frames
   of the train split and of the val split, each frame with the training pipeline (its QA chunks
   and history queue). A loss far higher on val than on train is overfitting; a trajectory loss
   high on the train frames themselves means the head did not fit them.
2. **Trajectory-only test** on every val frame of the test split (the frames ``tools/test.py``
   scores): the frames' QA is dropped, so only the trajectory is predicted, and the L2 (ST-P3
   convention, the planning metric's) is computed as ``tools/test.py`` would. For a BEV model with
   a temporal queue this runs twice: with the streamed history (the test default: each frame sees
   the BEV of its true previous frame, itself computed with history) and with the 2-frame queue
   of training (the previous frame computed without history), which shows whether the test-time
   history differs from what the model was trained on.

The config's ``load_from`` is ignored: the checkpoint given here is loaded (partial loads are
reported, not refused, so that a probe can read an incomplete checkpoint on purpose).
"""
import argparse
import copy
import json
import os.path as osp
import tempfile

from mmengine.config import DictAction


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("checkpoint")
    p.add_argument("--frames", type=int, default=16, help="train and val frames for the teacher-forced losses")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", help="write the results to this JSON file")
    p.add_argument("--cfg-options", nargs="+", action=DictAction,
                   help="override config keys, e.g. test_dataloader.dataset.data_root=...")
    return p.parse_args(argv)


def teacher_forced_losses(model, dataset_cfg, ann_file: str, frames: int) -> dict:
    """Mean of each ``loss*`` over ``frames`` evenly spaced frames of ``ann_file``."""
    import torch
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DATASETS

    dcfg = copy.deepcopy(dataset_cfg)
    dcfg.ann_file = ann_file
    ds = DATASETS.build(dcfg)
    idx = sorted(set(torch.linspace(0, len(ds) - 1, frames).long().tolist()))
    sums: dict[str, float] = {}
    # the losses as in training (batch-norm on batch statistics); a train-mode forward also moves
    # batch-norm running statistics, so the buffers are put back afterwards
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    model.train()
    for i in idx:
        torch.manual_seed(i)  # the dataset's QA-chunk draw
        with torch.no_grad():
            data = model.data_preprocessor(pseudo_collate([ds[i]]), True)
            losses = model(**data, mode="loss")
        for k, v in losses.items():
            if k.startswith("loss"):
                sums[k] = sums.get(k, 0.0) + float(v)
    with torch.no_grad():
        for k, v in model.named_buffers():
            v.copy_(buffers[k])
    return {"frames": len(idx), **{k: v / len(idx) for k, v in sums.items()}}


def trajectory_only_l2(model, dataloader, stream: bool) -> dict:
    """ST-P3 L2 of the trajectory alone on every frame of ``dataloader`` (QA dropped)."""
    import numpy as np
    import torch

    from bevlm.evaluation.planning_metric import planning_summary
    from bevlm.structures import scored_samples

    model.eval()
    model.reset_test_state()
    model.set_test_cfg(dict(stream_temporal=stream))
    l2, mask = [], []
    for batch in dataloader:
        data = model.data_preprocessor(batch, False)
        for s in data["data_samples"]:
            s.qa = []  # nothing to decode: the trajectory only
        with torch.no_grad():
            out = model(**data, mode="predict")
        for s in scored_samples(out):
            l2.append(np.linalg.norm(s.pred_traj.numpy() - s.gt_traj.numpy(), axis=-1))
            mask.append(s.gt_traj_mask.numpy())
    l2, mask = np.stack(l2), np.stack(mask)
    summary = planning_summary(l2, np.zeros_like(l2), mask, np.ones((1, len(l2))))
    keys = ("L2_1s_stp3", "L2_2s_stp3", "L2_3s_stp3", "L2_avg_stp3")
    return {"frames": len(l2), **{k: float(summary[k][0]) for k in keys}}


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner

    import bevlm.engine  # noqa: F401  (checkpoint loading policy: weights only)

    if args.threads:
        torch.set_num_threads(args.threads)
    for path in (args.config, args.checkpoint):
        if not osp.isfile(path):
            raise SystemExit(f"planning_probe: {path} does not exist")
    from bevlm.engine.config_check import check_config, merge_cfg_options

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        merge_cfg_options(cfg, args.cfg_options)
    check_config(cfg, args.config)  # misspelt keys / wrong types stop here
    cfg.load_from = None
    with tempfile.TemporaryDirectory() as work:
        cfg.work_dir = work
        runner = Runner.from_cfg(cfg)
        model = runner.model
        runner.load_checkpoint(args.checkpoint, strict=False)
        ds_cfg = cfg.train_dataloader.dataset
        val_ann = cfg.test_dataloader.dataset.ann_file
        result = {"config": args.config, "checkpoint": args.checkpoint,
                  "teacher_forced": {"train": teacher_forced_losses(model, ds_cfg, ds_cfg.ann_file, args.frames),
                                     "val": teacher_forced_losses(model, ds_cfg, val_ann, args.frames)},
                  "trajectory_only": {}}
        modes = [True]
        if getattr(model, "vision", None) == "bev" and getattr(model, "temporal_fusion", None) == "bev" \
                and model.bev_encoder.use_temporal:
            modes.append(False)
        for stream in modes:
            name = "streamed_history" if stream else "training_queue"
            result["trajectory_only"][name] = trajectory_only_l2(model, runner.test_dataloader, stream)
    print(json.dumps(result, indent=1))
    if args.out:
        from bevlm.utils import atomic_write_json
        atomic_write_json(result, args.out, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Train a model from a config: ``python tools/train.py CONFIG [--work-dir D] [--resume [CKPT]]``."""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from bevlm.engine.checkpoint import find_resumable_checkpoint
from bevlm.engine.config_check import check_config, check_load_from_input, merge_cfg_options


def parse_args():
    parser = argparse.ArgumentParser(description="Train a BEV-VLM")
    parser.add_argument("config", help="config file")
    parser.add_argument("--work-dir", help="where logs and checkpoints go (default work_dirs/<config>)")
    parser.add_argument("--resume", nargs="?", const="auto", default=None,
                        help="resume from a checkpoint; without a value, from the latest in the work dir")
    parser.add_argument("--amp", action="store_true", help="automatic mixed precision (GPU only)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction,
                        help="override config keys, e.g. model.vision=blind train_cfg.max_iters=10")
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0)
    args = parser.parse_args()
    if "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    return args


def main():
    args = parse_args()
    import bevlm.engine  # noqa: F401  (checkpoint loading policy)

    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:  # top-level variables (data_root) reach the values copied from them
        merge_cfg_options(cfg, args.cfg_options)
    check_config(cfg, args.config)  # misspelt keys / wrong types stop here, before any work
    cfg.work_dir = args.work_dir or cfg.get("work_dir") or osp.join(
        "work_dirs", osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.setdefault("loss_scale", "dynamic")
    if cfg.get("load_from") and not args.resume and not osp.isfile(cfg.load_from):
        raise SystemExit(f"{args.config}: load_from={cfg.load_from!r} does not exist. Fix: train the stage it comes "
                         f"from first (for configs/bev_vlm.py: python tools/train.py configs/bev_det_pretrain.py), "
                         f"or start from scratch with --cfg-options load_from=None")
    if args.resume == "auto":  # the newest readable checkpoint (a truncated last one is skipped, named)
        latest = find_resumable_checkpoint(cfg.work_dir)
        if latest is not None:  # else nothing to resume: a fresh start (from the config's load_from)
            cfg.resume, cfg.load_from = True, latest
    elif args.resume:
        cfg.resume, cfg.load_from = True, args.resume
    if not cfg.get("resume"):  # a pretrained vision side must see the image size it was trained on
        try:
            check_load_from_input(cfg, args.config)
        except ValueError as e:
            raise SystemExit(str(e)) from None
    from bevlm.engine.dist import prepare_cpu_distributed, prepare_fsdp

    try:
        prepare_fsdp(cfg)  # FSDP: an optim wrapper whose gradient clipping sees the whole sharded gradient
    except ValueError as e:
        raise SystemExit(f"{args.config}: {e}") from None
    prepare_cpu_distributed(cfg)  # torchrun on a machine without CUDA: gloo + CPU DDP / FSDP
    if cfg.get("strategy") is not None:  # e.g. FSDP for the larger LLMs: mmengine's FlexibleRunner
        from mmengine.runner import FlexibleRunner

        runner = FlexibleRunner.from_cfg(cfg)
    else:
        runner = Runner.from_cfg(cfg)
    runner.train()


if __name__ == "__main__":
    main()

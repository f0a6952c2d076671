"""Train draft heads for lossless speculative decoding on a trained checkpoint (self-distillation).

``python tools/train_draft_heads.py CONFIG CHECKPOINT [--frames 120] [--heads 3] [--out PATH]``

For ``--frames`` evenly spaced frames of the config's training split (every domain of a union), the
model runs once teacher-forced over the frame's prefix and its QA, in the format it is asked in at
test time; head ``k`` learns the model's own choice ``k + 1`` tokens after each answer position
(``bevlm.inference.speculative.draft_heads``). A share of the frames (``--val-share``) is held out
and each head's top-1 agreement with the model there is printed. The heads go to ``--out`` (a
safetensors file; default ``work_dirs/draft_heads/<config name>.safetensors``) with a JSON report
beside it; a benchmark variant uses them with ``speculative=dict(..., batched=True,
draft_heads=PATH)``. The heads never change an answer (every draft is verified by the model): they
only decide how many tokens a verify forward can accept.
"""
import argparse
import os
import os.path as osp
import time

from mmengine.config import DictAction


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("checkpoint")
    p.add_argument("--frames", type=int, default=120, help="training frames (evenly spaced over the split)")
    p.add_argument("--heads", type=int, default=3, help="number of heads K (head k guesses k + 1 tokens ahead)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--val-share", type=float, default=0.2, help="share of the frames held out for the report")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", help="heads file (default work_dirs/draft_heads/<config name>.safetensors)")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config keys (data paths, ...)")
    return p.parse_args(argv)


def evenly_spaced(total: int, count: int) -> list[int]:
    """``count`` indices spread over ``range(total)`` (all of them when ``count >= total``)."""
    if count >= total:
        return list(range(total))
    return sorted({round(i * (total - 1) / max(1, count - 1)) for i in range(count)})


def main(argv=None):
    args = parse_args(argv)
    if args.frames < 2 or args.heads < 1 or args.epochs < 1 or not 0 <= args.val_share < 1:
        raise SystemExit("train_draft_heads: need --frames >= 2, --heads >= 1, --epochs >= 1, 0 <= --val-share < 1")
    import torch
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope

    import bevlm.engine  # noqa: F401
    from bevlm.engine.benchmark import load_model
    from bevlm.inference.speculative.draft_heads import (head_training_data, output_rows, save_draft_heads,
                                                         train_draft_heads)
    from bevlm.inference.variants import training_frame_datasets
    from bevlm.utils import atomic_write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    init_default_scope("bevlm")
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    out = args.out or osp.join("work_dirs", "draft_heads", osp.splitext(osp.basename(args.config))[0] + ".safetensors")
    model = load_model(cfg, args.checkpoint)
    sets = training_frame_datasets(cfg)
    per_set = max(1, -(-args.frames // len(sets)))
    batches = [pseudo_collate([ds[i]]) for ds in sets for i in evenly_spaced(len(ds), per_set)]
    start = time.perf_counter()
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    log(f"draft heads: {len(batches)} training frames of {args.config}")
    data = head_training_data(model, batches, args.heads, log=log)
    collect_s = time.perf_counter() - start
    heads, report = train_draft_heads(data, lambda v: output_rows(model.llm.lm, v), args.heads, epochs=args.epochs,
                                      lr=args.lr, batch_size=args.batch_size, val_share=args.val_share,
                                      seed=args.seed, log=log)
    info = dict(config=args.config, checkpoint=args.checkpoint, frames=len(batches), epochs=args.epochs, lr=args.lr,
                seed=args.seed, collect_s=round(collect_s, 1),
                fit_s=round(time.perf_counter() - start - collect_s, 1), **report)
    save_draft_heads(heads, out, info=info)
    atomic_write_json(info, os.path.splitext(out)[0] + ".json")
    fmt = lambda xs: " / ".join("-" if x is None else f"{x:.3f}" for x in xs)  # noqa: E731
    print(f"draft heads -> {out}: {report['vocab']} tokens, {report['train_positions']} training positions of "
          f"{report['train_frames']} frames; top-1 agreement with the model per head: training {fmt(report['train_top1'])}"
          + (f", held out ({report['val_frames']} frames) {fmt(report['val_top1'])}" if report["val_top1"] else ""))


if __name__ == "__main__":
    main()

"""Which training loss moves which module: per-loss gradient norms by module group.

``python tools/grad_sources.py CONFIG [CHECKPOINT] [--frames 4] [--out grads.json] [--cfg-options K=V ...]``

For ``--frames`` evenly spaced frames of the train split (the training pipeline: QA chunks and
history queue) the training losses are computed, and each ``loss*`` term is differentiated on its
own with respect to the trainable parameters. The gradients are summed over the frames (the mean
gradient of a batch of those frames, times the frame count), and for each module group (the
model's top-level children; the LLM split into its LoRA weights and the rest) the tool prints:

* the norm of each loss's gradient on the group;
* the cosine between two losses' gradients on the group (``--pair``, default ``loss_lm`` and
  ``loss_traj``): near 0 the two losses pull the shared weights in unrelated directions;
* each loss's share of the group's summed squared norm.

AdamW normalises every parameter's step by its gradient's running scale, so on weights that two
losses share, the direction of the step follows whichever loss dominates the summed gradient: a
loss with a tenth of the norm of another hardly steers them. Without CHECKPOINT the config's
``load_from`` is loaded (the start of a stage-2 training; modules it lacks keep their
initialisation, as in training).
"""
import argparse
import copy
import os.path as osp
import tempfile

from mmengine.config import DictAction


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("checkpoint", nargs="?", help="weights to load (default: the config's load_from)")
    p.add_argument("--frames", type=int, default=4, help="train frames the gradients are summed over")
    p.add_argument("--pair", nargs=2, default=["loss_lm", "loss_traj"], metavar=("LOSS_A", "LOSS_B"),
                   help="the two losses whose gradients' cosine is printed per group")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", help="write the results to this JSON file")
    p.add_argument("--cfg-options", nargs="+", action=DictAction,
                   help="override config keys, e.g. train_dataloader.dataset.data_root=...")
    return p.parse_args(argv)


def group_of(name: str) -> str:
    """The module group of a parameter name: its top-level child, the LLM's LoRA weights apart."""
    head = name.split(".", 1)[0]
    if head == "llm":
        return "llm.lora" if "lora_" in name else "llm.other"
    return head


def loss_gradients(model, dataset, indices: list[int]) -> tuple[dict, dict]:
    """Per loss term, the gradient summed over the frames ``indices`` of ``dataset``, as
    ``{loss: {param name: tensor}}``, and the mean loss values."""
    import torch
    from mmengine.dataset import pseudo_collate

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    grads: dict[str, dict] = {}
    values: dict[str, float] = {}
    buffers = {k: v.clone() for k, v in model.named_buffers()}  # train mode moves batch-norm statistics
    model.train()
    for i in indices:
        torch.manual_seed(i)  # the dataset's QA-chunk draw
        data = model.data_preprocessor(pseudo_collate([dataset[i]]), True)
        losses = {k: v for k, v in model(**data, mode="loss").items()
                  if k.startswith("loss") and isinstance(v, torch.Tensor) and v.requires_grad}
        for j, (key, loss) in enumerate(losses.items()):
            values[key] = values.get(key, 0.0) + float(loss.detach()) / len(indices)
            got = torch.autograd.grad(loss, list(params.values()), retain_graph=j < len(losses) - 1,
                                      allow_unused=True)
            acc = grads.setdefault(key, {})
            for (name, _), g in zip(params.items(), got):
                if g is not None:
                    acc[name] = acc[name] + g if name in acc else g.detach().clone()
    with torch.no_grad():
        for k, v in model.named_buffers():
            v.copy_(buffers[k])
    return grads, values


def summarise(grads: dict, pair: tuple[str, str]) -> dict:
    """Per group: each loss's gradient norm and share of the squared norms, and the pair's cosine."""
    import torch

    groups = sorted({group_of(n) for g in grads.values() for n in g})
    out = {}
    for group in groups:
        vecs = {}
        for loss, g in grads.items():
            parts = [t.flatten().double() for n, t in sorted(g.items()) if group_of(n) == group]
            if parts:
                vecs[loss] = torch.cat(parts)
        total = sum(float(v.pow(2).sum()) for v in vecs.values())
        row = {"norm": {k: float(v.norm()) for k, v in vecs.items()},
               "share": {k: (float(v.pow(2).sum()) / total if total > 0 else 0.0) for k, v in vecs.items()}}
        a, b = pair
        if a in vecs and b in vecs and vecs[a].shape == vecs[b].shape:
            den = float(vecs[a].norm() * vecs[b].norm())
            row["cosine"] = float(vecs[a] @ vecs[b]) / den if den > 0 else None
        out[group] = row
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    from mmengine.config import Config
    from mmengine.registry import DATASETS
    from mmengine.runner import Runner

    import bevlm.engine  # noqa: F401  (checkpoint loading policy: weights only)
    from bevlm.engine.config_check import check_config, merge_cfg_options

    if args.threads:
        torch.set_num_threads(args.threads)
    if not osp.isfile(args.config):
        raise SystemExit(f"grad_sources: config {args.config} does not exist")
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        merge_cfg_options(cfg, args.cfg_options)
    check_config(cfg, args.config)
    checkpoint = args.checkpoint or cfg.get("load_from")
    if not checkpoint or not osp.isfile(checkpoint):
        raise SystemExit(f"grad_sources: checkpoint {checkpoint!r} does not exist; give CHECKPOINT or train the "
                         f"stage the config's load_from comes from")
    if args.frames < 1:
        raise SystemExit("grad_sources: --frames must be >= 1")
    cfg.load_from = None
    with tempfile.TemporaryDirectory() as work:
        cfg.work_dir = work
        runner = Runner.from_cfg(cfg)
        model = runner.model
        runner.load_checkpoint(checkpoint, strict=False)
        dataset = DATASETS.build(copy.deepcopy(cfg.train_dataloader.dataset))
        indices = sorted(set(torch.linspace(0, len(dataset) - 1, args.frames).long().tolist()))
        grads, values = loss_gradients(model, dataset, indices)
    result = {"config": args.config, "checkpoint": checkpoint, "frames": len(indices), "losses": values,
              "pair": list(args.pair), "groups": summarise(grads, tuple(args.pair))}
    print(f"{args.config} @ {checkpoint}, {len(indices)} train frames; losses "
          + ", ".join(f"{k} {v:.3f}" for k, v in values.items()))
    losses = list(values)
    print(f"{'group':18s}" + "".join(f"{'|g| ' + k:>20s}" for k in losses) + f"{'cos(' + ','.join(args.pair) + ')':>26s}")
    for group, row in result["groups"].items():
        cos = row.get("cosine")
        print(f"{group:18s}" + "".join(f"{row['norm'].get(k, 0.0):20.4g}" for k in losses)
              + f"{'' if cos is None else f'{cos:+.3f}':>26s}")
    if args.out:
        from bevlm.utils import atomic_write_json
        atomic_write_json(result, args.out, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

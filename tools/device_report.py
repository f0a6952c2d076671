"""Summarise a ``tools/device_check.sh`` run into ``report.json``.

  python tools/device_report.py --out-dir work_dirs/device_check --num-procs 8 --device cuda

Reads the training log scalars of mmengine (``train/<timestamp>/vis_data/scalars.json``: ``time``,
``loss``, ``memory`` = peak CUDA memory allocated in MB on rank 0), the two test runs'
``efficiency.json`` / ``metrics.json`` / ``drivelm.output.json``, and writes
``<out-dir>/report.json``: the machine, per-iteration time (median after 3 warm-up iterations),
peak memory, whether every logged loss is finite, decode tokens/s of greedy and lossless decoding,
and the share of lossless answers equal to the greedy ones. Exit status 1 if a loss is not finite or
a test answered nothing.

The share is information, not a check: with the LLM base in bf16 (the real-scale recipe) batched /
speculative verification and one-token-at-a-time decoding round differently, and a barely trained
model has many near-tied next tokens, so answers can differ (on the CPU rehearsal, 3 of 8 equal
after 2 iterations). Token identity is a property of fp32 decoding, tested in the suite.
"""
import argparse
import glob
import json
import math
import os
import os.path as osp
import platform
import statistics
import sys


def _scalars(train_dir: str) -> list[dict]:
    files = sorted(glob.glob(osp.join(train_dir, "*", "vis_data", "scalars.json")))
    if not files:
        raise SystemExit(f"{train_dir}: no */vis_data/scalars.json. Fix: run tools/device_check.sh first "
                         f"(its training step writes them)")
    rows = []
    with open(files[-1], encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return [r for r in rows if "loss" in r]


def _load(path: str) -> dict | list | None:
    if not osp.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", default="work_dirs/device_check")
    p.add_argument("--num-procs", type=int, default=1)
    p.add_argument("--device", default="cuda")
    p.add_argument("--config", default="configs/nuscenes/device_check.py")
    args = p.parse_args()
    import torch

    rows = _scalars(osp.join(args.out_dir, "train"))
    times = [r["time"] for r in rows if "time" in r]
    losses = [r["loss"] for r in rows]
    mem = [r["memory"] for r in rows if "memory" in r]
    steady = times[3:] or times
    report = {
        "config": args.config,
        "device": args.device,
        "num_procs": args.num_procs,
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "cuda": torch.version.cuda, "cpu": platform.processor() or platform.machine(),
                    "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]},
        "train": {"iterations_logged": len(rows), "iter_s_median": statistics.median(steady) if steady else None,
                  "iter_s_first": times[0] if times else None,
                  "peak_memory_mb_rank0": max(mem) if mem else None,
                  "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
                  "losses_finite": bool(losses) and all(math.isfinite(v) for v in losses)},
    }
    answers = {}
    for name in ("test", "test_lossless"):
        folder = osp.join(args.out_dir, name)
        eff, metrics = _load(osp.join(folder, "efficiency.json")), _load(osp.join(folder, "metrics.json"))
        out = _load(osp.join(folder, "drivelm.output.json"))
        answers[name] = [o["answer"] for o in out] if out else None
        report[name] = {"decode_tokens_per_s": (eff or {}).get("decode_tokens_per_s"),
                        "frame_s": (eff or {}).get("frame_s"),
                        "gpt_free_final": (metrics or {}).get("drivelm/gpt_free_final"),
                        "questions": len(out) if out else 0}
    a, b = answers["test"], answers["test_lossless"]
    report["lossless_answer_agreement"] = (sum(x == y for x, y in zip(a, b)) / len(a)
                                           if a and b and len(a) == len(b) else None)
    ok = report["train"]["losses_finite"] and bool(report["test"]["questions"]) and bool(
        report["test_lossless"]["questions"])
    report["ok"] = ok
    path = osp.join(args.out_dir, "report.json")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, path)
    print(json.dumps(report, indent=2))
    print(f"report written to {path}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

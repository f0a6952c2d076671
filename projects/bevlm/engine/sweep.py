"""Ablation sweeps: a grid of configs x cfg-options -> one work dir per run -> one table + plot.

A sweep file (``configs/sweeps/<name>.py``) defines::

    sweep = dict(
        name="baselines",                       # work_dirs/sweeps/<name>/
        configs=["configs/bev_vlm.py", ...],    # base configs
        grid={"model.max_new_tokens": [16, 32]},  # cfg-options, Cartesian product (optional)
        steps=["train", "test"],                # what each run does
        test_options=[...],                     # extra cfg-options for test only (optional)
        test_args=["--variant", "lossless"],    # extra tools/test.py arguments (optional)
        variants=["baseline", "lossless"],      # inference variants (configs/benchmarks/default.py):
                                                # each run once per variant, "<run>__<variant>",
                                                # tested with --variant (optional)
        reuse={"bev_vlm": "work_dirs/sweeps/baselines/bev_vlm"},  # a run's training taken from
                                                # another work dir that trained the same config
                                                # (checked key by key; trained anew when that dir
                                                # is missing or differs; optional)
        test_sets={"day": [...], "night": [...]},  # several test splits per run (optional):
                                                # columns are then named "<set>:<metric>"
        columns=["drivelm/gpt_free_final", ...],  # metrics in the table
        pareto=("efficiency/frame_s", "drivelm/gpt_free_final"),  # x (lower better), y (higher better)
    )

Runs are resumable: a run whose ``metrics.json`` exists is not run again, and training resumes
from the run's last checkpoint if one exists.
"""
from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
import time


def expand_runs(sweep: dict) -> list[dict]:
    """One dict per run: ``{"id", "config", "options": [k=v, ...]}`` (deterministic order); with
    ``variants`` one per (run, variant), also holding ``"variant"`` and the run's ``"base_id"``."""
    grid = sweep.get("grid", {}) or {}
    keys = sorted(grid)
    runs = []
    for config in sweep["configs"]:
        for values in itertools.product(*(grid[k] for k in keys)) if keys else [()]:
            options = [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in zip(keys, values)]
            stem = os.path.splitext(os.path.basename(config))[0]
            suffix = "_".join(f"{k.split('.')[-1]}-{v}" for k, v in zip(keys, values))
            base = {"id": stem + (f"__{suffix}" if suffix else ""), "config": config, "options": options}
            if sweep.get("variants"):
                runs += [dict(base, id=f"{base['id']}__{v}", base_id=base["id"], variant=v) for v in sweep["variants"]]
            else:
                runs.append(base)
    ids = [r["id"] for r in runs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"sweep {sweep['name']}: duplicate run ids {ids}; give configs distinct file names")
    return runs


# where/how a run ran and how it was tested, not what it trained (tools/test.py re-dumps the
# config into the work dir with its test options)
_RUN_KEYS = ("work_dir", "load_from", "resume", "launcher", "test_dataloader", "test_evaluator", "test_cfg",
             "val_dataloader", "val_evaluator", "val_cfg")


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def reuse_training(run: dict, work: str, src: str) -> None:
    """Point ``work`` at the checkpoint of ``src``, a work dir that trained the same config.

    Raises:
        FileNotFoundError: ``src`` has no finished training (no ``last_checkpoint`` / dumped config).
        ValueError: ``src`` trained something else (the differing keys are named).
    """
    from mmengine.config import Config, DictAction

    stem = os.path.splitext(os.path.basename(run["config"]))[0]
    dumped, last = os.path.join(src, stem + ".py"), os.path.join(src, "last_checkpoint")
    for path in (dumped, last):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"sweep reuse of {run['id']}: {path} is missing")
    want = Config.fromfile(run["config"])
    if run["options"]:
        opts = {}
        for o in run["options"]:
            k, v = o.split("=", 1)
            opts[k] = DictAction._parse_iterable(v)
        want.merge_from_dict(opts)
    want, have = _flat(want.to_dict()), _flat(Config.fromfile(dumped).to_dict())
    diff = sorted(k for k in set(want) | set(have)
                  if k.split(".")[0] not in _RUN_KEYS and want.get(k, "<missing>") != have.get(k, "<missing>"))
    if diff:
        raise ValueError(f"sweep reuse of {run['id']}: {dumped} differs from {run['config']} "
                         f"{run['options']} in {diff[:8]}")
    ckpt = open(last).read().strip()
    os.makedirs(work, exist_ok=True)
    with open(os.path.join(work, "reused_from.txt"), "w") as f:
        f.write(f"training of {src} (same config, checked key by key): {ckpt}\n")
    with open(os.path.join(work, "last_checkpoint.tmp"), "w") as f:
        f.write(ckpt)
    os.replace(os.path.join(work, "last_checkpoint.tmp"), os.path.join(work, "last_checkpoint"))


def _run(cmd: list[str], log_path: str) -> None:
    with open(log_path, "a") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}), see {log_path}: {' '.join(cmd)}")


def run_sweep(sweep: dict, root: str = "work_dirs/sweeps", python: str = sys.executable,
              dry_run: bool = False, only: list[str] | None = None) -> list[dict]:
    """Run (or resume) every run of the sweep (or the runs named in ``only``) and return the rows
    of every run that has results; the tables list those rows."""
    out_root = os.path.join(root, sweep["name"])
    os.makedirs(out_root, exist_ok=True)
    rows = []
    runs = expand_runs(sweep)
    unknown = sorted(set(only or []) - {r["id"] for r in runs})
    if unknown:
        raise ValueError(f"sweep {sweep['name']}: no runs {unknown}; its runs: {[r['id'] for r in runs]}")
    for n, run in enumerate(runs, 1):
        work = os.path.join(out_root, run["id"])
        test_sets = sweep.get("test_sets") or {"": []}
        test_dirs = {name: os.path.join(work, f"test_{name}" if name else "test") for name in test_sets}
        selected = only is None or run["id"] in only
        finished = all(os.path.isfile(os.path.join(d, "metrics.json")) for d in test_dirs.values())
        print(f"[{n}/{len(runs)}] {run['id']}" + ("" if selected else (" (not selected)" if finished
                                                                        else " (not selected, no results)")),
              flush=True)
        if dry_run or not (selected or finished):
            continue
        log = os.path.join(work, "sweep.log")
        t0 = time.time()
        pending = [name for name, d in test_dirs.items()
                   if selected and not os.path.isfile(os.path.join(d, "metrics.json"))]
        reuse_map = sweep.get("reuse") or {}
        reuse = reuse_map.get(run["id"]) or reuse_map.get(run.get("base_id"))
        if pending and reuse and not os.path.isfile(os.path.join(work, "last_checkpoint")):
            try:
                reuse_training(run, work, reuse)
            except (FileNotFoundError, ValueError) as e:  # nothing (or something else) to reuse: train
                print(f"    {e}; training it", flush=True)
                reuse = None
        if pending and "train" in sweep.get("steps", ["train", "test"]) and not reuse:
            os.makedirs(work, exist_ok=True)
            opts = ["--cfg-options", *run["options"]] if run["options"] else []
            resume = ["--resume"] if os.path.isfile(os.path.join(work, "last_checkpoint")) else []
            _run([python, "tools/train.py", run["config"], "--work-dir", work, *resume, *opts], log)
        for name in pending:
            ckpt = open(os.path.join(work, "last_checkpoint")).read().strip()
            test_opts = list(run["options"]) + list(sweep.get("test_options", [])) + list(test_sets[name])
            variant = ["--variant", run["variant"]] if run.get("variant") else []
            _run([python, "tools/test.py", run["config"], ckpt, "--work-dir", work, "--out-dir",
                  test_dirs[name], *sweep.get("test_args", []), *variant,
                  *(["--cfg-options", *test_opts] if test_opts else [])], log)
        if pending:
            print(f"    done in {time.time() - t0:.0f} s", flush=True)
        row = {"run": run["id"]}
        for name, d in test_dirs.items():
            with open(os.path.join(d, "metrics.json")) as f:
                row.update({(f"{name}:{k}" if name else k): v for k, v in json.load(f).items()})
        rows.append(row)
    if not dry_run:
        write_tables(sweep, rows, out_root)
    return rows


def write_tables(sweep: dict, rows: list[dict], out_root: str) -> None:
    """``results.csv``, ``results.md`` and (if ``pareto`` is set) ``pareto.png``."""
    columns = ["run"] + list(sweep.get("columns") or sorted({k for r in rows for k in r} - {"run"}))
    with open(os.path.join(out_root, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else ("-" if v is None else str(v))

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    with open(os.path.join(out_root, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    if sweep.get("pareto") and rows:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        xk, yk = sweep["pareto"]
        pts = [(r.get(xk), r.get(yk), r["run"]) for r in rows if r.get(xk) is not None and r.get(yk) is not None]
        fig, ax = plt.subplots(figsize=(6, 4))
        for x, y, name in pts:
            ax.scatter(x, y)
            ax.annotate(name, (x, y), fontsize=7)
        front = sorted(p for p in pts if not any(q[0] <= p[0] and q[1] >= p[1] and q != p for q in pts))
        if front:
            ax.plot([p[0] for p in front], [p[1] for p in front], "k--", linewidth=0.8, label="Pareto front")
            ax.legend(fontsize=7)
        ax.set_xlabel(xk)
        ax.set_ylabel(yk)
        fig.tight_layout()
        fig.savefig(os.path.join(out_root, "pareto.png"), dpi=110)
        plt.close(fig)

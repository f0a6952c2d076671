"""Ablation sweeps: a grid of configs x cfg-options -> one work dir per run -> one table + plot.

A sweep file (``configs/sweeps/<name>.py``) defines::

    sweep = dict(
        name="baselines",                       # work_dirs/sweeps/<name>/
        configs=["configs/bev_vlm.py", ...],    # base configs
        grid={"model.test_cfg.max_new_tokens": [16, 32]},  # cfg-options, Cartesian product (optional)
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
        seeds=[0, 1, 2],                        # train and test every run once per seed
                                                # (cfg-option randomness.seed=S), each into
                                                # <run>/seed<S>/ (optional)
        resamples=1000,                         # paired bootstrap resamples of the summary (optional)
    )

Runs are resumable: a run whose ``metrics.json`` exists is not run again, and training resumes
from the run's last checkpoint if one exists.

Tables: ``results.csv`` / ``results.md`` hold one row per run (per run and seed with ``seeds``);
``summary.md`` / ``summary.csv`` / ``summary.json`` (small files, meant to be committed, e.g.
copied to docs/results/ by ``tools/sweep.py --results-dir``) hold, per run, the mean ± standard
deviation over seeds of every column (sample std, ddof=1; "-" with one seed) and, against the
sweep's first run (the reference), the paired bootstrap difference of the seed means with its
95 % interval (:mod:`bevlm.evaluation.bootstrap`): each resample draws the test scenes and then
frames within them once and applies the same draw to the pair (reference, run) of every seed
that both finished, and the resample's statistic is the mean over those seeds of run - reference.
The interval is thus that of the seed-averaged difference under resampling of the test frames;
the seed-to-seed spread is the ± std next to it (with 3 seeds it is not resampled). Differences
whose interval excludes zero are marked ``*``. Runs whose test folders lack the official files
(``drivelm.output.json`` / ``drivelm.test_eval.json``) or that were scored on other frames are
summarised without a bootstrap, and the reason is written.
"""
from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
import time


def sweep_seeds(sweep: dict) -> list[int] | None:
    """The sweep's ``seeds`` (distinct integers) or None."""
    seeds = sweep.get("seeds")
    if seeds is None:
        return None
    if (not isinstance(seeds, (list, tuple)) or not seeds or not all(isinstance(s, int) for s in seeds)
            or len(set(seeds)) != len(seeds)):
        raise ValueError(f"sweep {sweep.get('name')}: seeds must be a non-empty list of distinct integers, got "
                         f"{seeds!r}. Fix: e.g. seeds=[0, 1, 2]")
    return list(seeds)


def expand_runs(sweep: dict) -> list[dict]:
    """One dict per run: ``{"id", "config", "options": [k=v, ...], "work": subfolder}``
    (deterministic order); with ``variants`` one per (run, variant), also holding ``"variant"``
    and the run's ``"base_id"``; with ``seeds`` one per (run, seed), also holding ``"seed"``,
    the option ``randomness.seed=S`` and the work subfolder ``<id>/seed<S>``."""
    seeds = sweep_seeds(sweep)
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
    if seeds is None:
        return [dict(r, work=r["id"]) for r in runs]
    return [dict(r, seed=seed, options=list(r["options"]) + [f"randomness.seed={seed}"],
                 work=os.path.join(r["id"], f"seed{seed}")) for r in runs for seed in seeds]


# where/how a run ran and how it was tested, not what it trained (tools/test.py re-dumps the
# config into the work dir with its test options)
_RUN_KEYS = ("work_dir", "load_from", "resume", "launcher", "test_dataloader", "test_evaluator", "test_cfg",
             "val_dataloader", "val_evaluator", "val_cfg")
# hooks tools/test.py adds to the dumped config (--variant, --quantized, the answer-budget check): test-time,
# not training
_TEST_HOOKS = ("InferenceVariantHook", "QuantizedLLMHook", "AnswerBudgetCheckHook")


def _training_view(cfg: dict) -> dict:
    """``cfg`` (a config as a dict) without what ``tools/test.py`` adds when it re-dumps a config into the
    work dir: its inference hooks, the strict-load switch of the checkpoint hook and the model's
    test-time decoding settings (``model.test_cfg``)."""
    cfg = dict(cfg)
    hooks = [h for h in (cfg.get("custom_hooks") or []) if not (isinstance(h, dict) and h.get("type") in _TEST_HOOKS)]
    if hooks:
        cfg["custom_hooks"] = hooks
    else:
        cfg.pop("custom_hooks", None)
    default_hooks = dict(cfg.get("default_hooks") or {})
    if isinstance(default_hooks.get("plain_checkpoint"), dict):
        default_hooks["plain_checkpoint"] = {k: v for k, v in default_hooks["plain_checkpoint"].items()
                                             if k != "strict_load"}
        cfg["default_hooks"] = default_hooks
    if isinstance(cfg.get("model"), dict) and "test_cfg" in cfg["model"]:  # decoding settings, set at test time
        cfg["model"] = {k: v for k, v in cfg["model"].items() if k != "test_cfg"}
    return cfg


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _dumped_config(work: str, run: dict) -> str | None:
    """The config a training (or test) dumped into ``work``: ``<config stem>.py``, else the one ``.py``
    file there (a training under another config name, such as an ablation that has since become the
    default), else a run record's ``config.json``; None when there is none."""
    stem = os.path.splitext(os.path.basename(run["config"]))[0]
    dumped = os.path.join(work, stem + ".py")
    if os.path.isfile(dumped):
        return dumped
    others = sorted(f for f in os.listdir(work) if f.endswith(".py")) if os.path.isdir(work) else []
    if len(others) == 1:
        return os.path.join(work, others[0])
    record = os.path.join(work, RECORD_CONFIG)
    return record if not others and os.path.isfile(record) else None


def _normal(flat: dict) -> dict:
    """A flattened config as JSON would hold it (tuples -> lists, other objects -> their repr), so that a
    config read from a ``.py`` dump and one read from a record's ``config.json`` compare equal."""
    return json.loads(json.dumps(flat, default=repr))


def _config_view(path: str) -> dict:
    """The training keys of the config at ``path``, flattened: a work dir's ``.py`` dump, or a run
    record's ``config.json`` (plain JSON, read without running anything)."""
    if path.endswith(".json"):
        with open(path) as f:
            view = json.load(f)
        if not isinstance(view, dict) or not isinstance(view.get("flat"), dict):
            raise ValueError(f"{path}: not a run record config (a JSON object with a 'flat' dict of the "
                             "training keys). Fix: delete the record dir; the sweep writes it again")
        return view["flat"]
    from mmengine.config import Config

    return _normal(_flat(_training_view(Config.fromfile(path).to_dict())))


def _config_with(config: str, options: list[str]):
    """``config`` (a path) with the ``key=value`` cfg-options applied, as tools/train.py applies them."""
    from mmengine.config import Config, DictAction

    cfg = Config.fromfile(config)
    if options:
        opts = {}
        for o in options:
            k, v = o.split("=", 1)
            opts[k] = DictAction._parse_iterable(v)
        cfg.merge_from_dict(opts)
    return cfg


def _wanted_view(run: dict) -> dict:
    return _normal(_flat(_training_view(_config_with(run["config"], run["options"]).to_dict())))


def config_diff(run: dict, dumped: str) -> list[str]:
    """Keys (flattened, training keys only) in which the config ``dumped`` (a ``.py`` dump or a run
    record's ``config.json``) differs from the run's config with its options."""
    want, have = _wanted_view(run), _config_view(dumped)
    return sorted(k for k in set(want) | set(have)
                  if k.split(".")[0] not in _RUN_KEYS and want.get(k, "<missing>") != have.get(k, "<missing>"))


def check_run_dirs(sweep: dict, runs: list[dict], out_root: str) -> None:
    """Refuse, before any work, a run dir that holds a training of another config: its results would be
    tabled (or its training resumed) under the current config's name. Run dirs without a dumped config
    (nothing run yet) pass."""
    for run in runs:
        work = os.path.join(out_root, run["work"])
        dumped = _dumped_config(work, run)
        if dumped is None:
            continue
        diff = config_diff(run, dumped)
        if diff:
            raise ValueError(f"sweep {sweep['name']}: {work} holds a run of another config ({dumped} differs "
                             f"from {run['config']} {run['options']} in {diff[:8]}); its results would be "
                             f"tabled as {run['id']}. Move that dir away (or restore the config it was run "
                             "with) and run the sweep again")
        stale = stale_test_results(sweep, run, work)
        if stale:
            raise ValueError(f"sweep {sweep['name']}: {work} holds test results of another test command "
                             f"({stale}); they would be tabled as this sweep's. Delete its test folder(s) "
                             f"{sorted(_test_dirs(sweep, work).values())} to test the training again, or "
                             "restore the sweep's earlier test settings")


def stale_test_results(sweep: dict, run: dict, work: str) -> str | None:
    """Why the finished results in ``work`` (its run file says how they were tested) are not what the
    sweep would test now, or None (they are, or there are none to check)."""
    run_file = os.path.join(work, RUN_FILE)
    if not os.path.isfile(run_file) or not all(
            os.path.isfile(os.path.join(d, "metrics.json")) for d in _test_dirs(sweep, work).values()):
        return None
    with open(run_file) as f:
        have = json.load(f).get("test") or {}
    want = sweep_test_command(sweep, run)
    keys = sorted(k for k in set(have) | set(want) if have.get(k, "<missing>") != want.get(k, "<missing>"))
    if not keys:
        return None
    return "; ".join(f"{k}: tested with {have.get(k, '<not recorded>')}, the sweep tests with {want.get(k)}"
                     for k in keys)[:600]


# --- run records ------------------------------------------------------------------------------
# A finished run leaves ``sweep_run.json`` in its work dir: the sweep, run, seed, config and options,
# the test command (test args / options / sets, inference variant, the test data and the config's
# model.test_cfg) and the machine it ran on
# (bevlm.utils.machine_info). With a records folder (``tools/sweep.py --results-dir DIR`` -> DIR/runs),
# each finished run is also copied there as a *record*: that file, ``config.json`` (the training
# keys of its config, flattened, plain JSON) and its test folders' small files (metrics, the official
# DriveLM output / test files, per-frame records: tens of kilobytes; a detector's matches, about
# 100 kB). Records are meant to be committed: they are the files behind a table, and the sweep
# restores a run from its record (or a reused run from the other sweep's record) instead of training
# it again, when the config matches key by key and the test command is the same. A run that reuses
# another sweep's run gets no record of its own when that run's record holds its results (one record
# serves both). Nothing in a record is executed.
RUN_FILE = "sweep_run.json"
RECORD_CONFIG = "config.json"
RECORD_FILES = ("metrics.json", "drivelm.output.json", "drivelm.test_eval.json", "per_frame.json",
                "efficiency.json", "answer_budget.json",
                # a detector's per-prediction matches (about 100 kB): tools/compare_det.py's bootstrap input
                "det_matches.npz")


def sweep_test_command(sweep: dict, run: dict) -> dict:
    """How the sweep tests ``run`` (compared before a finished run's results are taken over): the
    test arguments and options, per test set what it scores (:func:`split_fingerprint`) and the
    model's decoding settings (:func:`test_cfg_fingerprint`)."""
    configs = _test_set_configs(sweep, run)
    return {"test_args": [str(a) for a in sweep.get("test_args", [])],
            "test_options": [str(o) for o in sweep.get("test_options", [])],
            "test_sets": {k: [str(o) for o in v] for k, v in (sweep.get("test_sets") or {"": []}).items()},
            "variant": run.get("variant"), "test_data": split_fingerprint(configs),
            "model_test_cfg": test_cfg_fingerprint(configs)}


def _test_set_configs(sweep: dict, run: dict) -> dict | None:
    """Per test set, the run's config as ``tools/test.py`` sees it (the run's, the sweep's test and the
    set's options applied); None when the config is not a file (sweeps of stand-in configs)."""
    if not os.path.isfile(run["config"]):
        return None
    return {name: _config_with(run["config"], list(run["options"]) + [str(o) for o in sweep.get("test_options", [])]
                               + [str(o) for o in set_opts])
            for name, set_opts in (sweep.get("test_sets") or {"": []}).items()}


def test_cfg_fingerprint(configs: dict | None) -> dict | None:
    """Per test set (``configs``: :func:`_test_set_configs`), the config's ``model.test_cfg`` flattened as
    JSON holds it: the decoding settings the test starts from (``--variant`` then overrides some, and the
    variant is part of the test command). A config whose default test-time settings changed (say
    ``multiple_choice='likelihood'``) is not taken for runs tested with the earlier ones."""
    if configs is None:
        return None
    out = {}
    for name, cfg in configs.items():
        test_cfg = (cfg.get("model") or {}).get("test_cfg") or {}
        test_cfg = test_cfg.to_dict() if hasattr(test_cfg, "to_dict") else dict(test_cfg)
        out[name] = _normal(_flat(test_cfg))
    return out


def split_fingerprint(configs: dict | None) -> dict | None:
    """Per test set (``configs``: :func:`_test_set_configs`), the test dataset's settings (split, stride,
    question selection, queue; not its paths) and a sha256 of its frames (scene and frame tokens with
    their DriveLM QA, read from the info file): a run tested on another world or split is not taken for
    this one. None for stand-in configs; ``frames_sha256`` None when the info file is missing."""
    import hashlib

    from bevlm.utils import load_plain_pickle

    if configs is None:
        return None
    out = {}
    for name, cfg in configs.items():
        ds = cfg.get("test_dataloader", {}).get("dataset", {})
        ds = ds.to_dict() if hasattr(ds, "to_dict") else dict(ds)
        ann = str(ds.get("ann_file", ""))
        path = ann if os.path.isabs(ann) else os.path.join(str(ds.get("data_root", "")), ann)
        digest = None
        if ann and os.path.isfile(path):
            frames = [[f.get("scene_token"), f.get("token"), f.get("drivelm")]
                      for f in load_plain_pickle(path)["data_list"]]
            digest = hashlib.sha256(json.dumps(frames, sort_keys=True, default=repr).encode()).hexdigest()
        settings = {k: v for k, v in ds.items() if k not in ("data_root", "ann_file", "pipeline", "type")}
        out[name] = {"dataset": _normal(_flat(settings)), "frames_sha256": digest}
    return out


def _test_dirs(sweep: dict, work: str) -> dict:
    return {name: os.path.join(work, f"test_{name}" if name else "test") for name in (sweep.get("test_sets") or {"": []})}


def write_run_file(sweep: dict, run: dict, work: str) -> None:
    """``sweep_run.json`` of a run this process just trained / tested (the machine is this one)."""
    from bevlm.utils import atomic_write_json, machine_info

    atomic_write_json({"sweep": sweep["name"], "run": run["id"], "seed": run.get("seed"), "config": run["config"],
                       "options": list(run["options"]), "test": sweep_test_command(sweep, run),
                       "machine": machine_info(), "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z")},
                      os.path.join(work, RUN_FILE))


def check_finished_run(sweep: dict, run: dict, src: str) -> tuple[str | None, dict | None, str | None]:
    """Whether ``src`` (a run dir or a record) holds finished results of ``run``: its config key by key
    and the sweep's test command. Returns (None, its run file, its config dump) when it does, else
    (why not, None, None)."""
    run_file = os.path.join(src, RUN_FILE)
    if not os.path.isfile(run_file):
        return f"{src} has no {RUN_FILE} (not a finished sweep run)", None, None
    with open(run_file) as f:
        meta = json.load(f)
    want = sweep_test_command(sweep, run)
    if meta.get("test") != want:
        return f"{src} was tested with {meta.get('test')}, this sweep tests with {want}", None, None
    # a record's plain-JSON config first: reading a record runs nothing
    dumped = os.path.join(src, RECORD_CONFIG)
    dumped = dumped if os.path.isfile(dumped) else _dumped_config(src, run)
    if dumped is None:
        return f"{src} holds no config dump", None, None
    diff = config_diff(run, dumped)
    if diff:
        return f"{dumped} differs from {run['config']} {run['options']} in {diff[:8]}", None, None
    missing = [d for d in _test_dirs(sweep, src).values() if not os.path.isfile(os.path.join(d, "metrics.json"))]
    if missing:
        return f"{missing[0]} has no metrics.json", None, None
    return None, meta, dumped


def shared_record(sweep: dict, run: dict, root: str, records: str | None, reuse: str | None) -> str | None:
    """The record of the run that ``run`` reuses (another sweep's run of the same config and seed) when
    it holds this run's results (same config, same test command): such a run gets no record of its
    own, the one record serves both sweeps (a fresh checkout restores from it)."""
    if not (records and reuse):
        return None
    rel = os.path.relpath(os.path.abspath(reuse), os.path.abspath(root))
    if rel.startswith(".."):
        return None
    cand = os.path.join(records, rel)
    return cand if check_finished_run(sweep, run, cand)[0] is None else None


def copy_finished_run(sweep: dict, run: dict, src: str, dst: str, as_record: bool = False) -> str | None:
    """Copy the finished run ``src`` (its run file, config and test folders' small files) to ``dst``
    when it ran ``run``'s config (key by key) and was tested with the sweep's test command. Returns
    None when copied, else why not (nothing is written then). ``as_record`` writes the config as
    ``config.json`` (plain JSON) instead of copying the ``.py`` dump."""
    import shutil

    from bevlm.utils import atomic_write_json

    why, meta, dumped = check_finished_run(sweep, run, src)
    if why is not None:
        return why
    src_tests, dst_tests = _test_dirs(sweep, src), _test_dirs(sweep, dst)
    for name, d in src_tests.items():
        os.makedirs(dst_tests[name], exist_ok=True)
        for fname in RECORD_FILES:
            if os.path.isfile(os.path.join(d, fname)):
                shutil.copyfile(os.path.join(d, fname), os.path.join(dst_tests[name], fname))
    if as_record:
        atomic_write_json({"config": run["config"], "options": list(run["options"]), "flat": _config_view(dumped)},
                          os.path.join(dst, RECORD_CONFIG))
    elif not dumped.endswith(".json"):
        shutil.copyfile(dumped, os.path.join(dst, os.path.basename(dumped)))
    else:
        shutil.copyfile(dumped, os.path.join(dst, RECORD_CONFIG))
    if not as_record and os.path.abspath(src) != os.path.abspath(dst):
        meta.setdefault("results_from", src)
    atomic_write_json(meta, os.path.join(dst, RUN_FILE))
    return None


def _restore_candidates(run: dict, root: str, out_root: str, records: str | None, reuse: str | None) -> list[str]:
    """Where a finished copy of ``run`` may be: its own record, the reused run dir, that dir's record."""
    found = []
    if records:
        found.append(os.path.join(records, os.path.relpath(out_root, root), run["work"]))
    if reuse:
        found.append(reuse)
        rel = os.path.relpath(os.path.abspath(reuse), os.path.abspath(root))
        if records and not rel.startswith(".."):
            found.append(os.path.join(records, rel))
    return [d for d in found if os.path.isfile(os.path.join(d, RUN_FILE))]


def resolve_last_checkpoint(work: str) -> str:
    """The checkpoint that ``work/last_checkpoint`` names.

    mmengine writes an absolute path; when the run folder has moved since (another clone, a removed
    worktree) and the named file is gone, the file of the same name in ``work`` is taken. When
    neither exists the named path is returned: ``tools/test.py`` stops on it before any work,
    naming it.
    """
    named = open(os.path.join(work, "last_checkpoint")).read().strip()
    local = os.path.join(work, os.path.basename(named))
    return local if not os.path.isfile(named) and os.path.isfile(local) else named


def reuse_training(run: dict, work: str, src: str) -> None:
    """Point ``work`` at the checkpoint of ``src``, a work dir that trained the same config.

    Raises:
        FileNotFoundError: ``src`` has no finished training (no ``last_checkpoint`` / dumped config).
        ValueError: ``src`` trained something else (the differing keys are named).
    """
    import shutil

    stem = os.path.splitext(os.path.basename(run["config"]))[0]
    dumped = _dumped_config(src, run) or os.path.join(src, stem + ".py")
    last = os.path.join(src, "last_checkpoint")
    for path in (dumped, last):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"sweep reuse of {run['id']}: {path} is missing")
    diff = config_diff(run, dumped)
    if diff:
        raise ValueError(f"sweep reuse of {run['id']}: {dumped} differs from {run['config']} "
                         f"{run['options']} in {diff[:8]}")
    ckpt = resolve_last_checkpoint(src)
    os.makedirs(work, exist_ok=True)
    if not _dumped_config(work, run):  # the config beside the results (the run's record is written from it)
        shutil.copyfile(dumped, os.path.join(work, os.path.basename(dumped)))
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
              dry_run: bool = False, only: list[str] | None = None, results_dir: str | None = None,
              only_seeds: list[int] | None = None, records: str | None = None) -> list[dict]:
    """Run (or resume) every run of the sweep (or the runs named in ``only``; with ``seeds`` every
    seed of them, or the seeds in ``only_seeds``) and return the rows of every run that has
    results; the tables list those rows. ``results_dir`` also receives the summary as
    ``<name>.md|.csv|.json``. ``records``: the run-records folder (see above): finished runs are
    restored from it and newly finished ones copied into it."""
    out_root = os.path.join(root, sweep["name"])
    os.makedirs(out_root, exist_ok=True)
    rows = []
    runs = expand_runs(sweep)
    unknown = sorted(set(only or []) - {r["id"] for r in runs})
    if unknown:
        raise ValueError(f"sweep {sweep['name']}: no runs {unknown}; its runs: {[r['id'] for r in runs]}")
    if only_seeds is not None:
        if not sweep.get("seeds"):
            raise ValueError(f"sweep {sweep['name']}: seeds {list(only_seeds)} selected, but the sweep has no "
                             "`seeds=[...]`; drop the seed selection or add seeds to the sweep file")
        missing = sorted(set(only_seeds) - set(sweep["seeds"]))
        if missing:
            raise ValueError(f"sweep {sweep['name']}: seeds {missing} are not among its seeds {sweep['seeds']}")
    if not dry_run:
        check_run_dirs(sweep, runs, out_root)
    dirs_of: dict[tuple, dict] = {}
    machines: dict[tuple, dict] = {}
    for n, run in enumerate(runs, 1):
        work = os.path.join(out_root, run["work"])
        test_sets = sweep.get("test_sets") or {"": []}
        test_dirs = _test_dirs(sweep, work)
        selected = ((only is None or run["id"] in only)
                    and (only_seeds is None or run.get("seed") in only_seeds))
        reuse_map = sweep.get("reuse") or {}
        reuse = reuse_map.get(run["id"]) or reuse_map.get(run.get("base_id"))
        if reuse and "seed" in run:  # a seeded sweep's run of the same seed (or its record)
            seeded = os.path.join(reuse, f"seed{run['seed']}")
            if os.path.isdir(seeded) or not os.path.isdir(reuse):
                reuse = seeded
        reused_from = reuse
        finished = all(os.path.isfile(os.path.join(d, "metrics.json")) for d in test_dirs.values())
        restored = None
        # a finished copy replaces nothing of this run's own: only a run without a training of its own
        # (none yet, or one pointed at another run's checkpoint) is restored
        own_training = (os.path.isfile(os.path.join(work, "last_checkpoint"))
                        and not os.path.isfile(os.path.join(work, "reused_from.txt")))
        if not finished and not dry_run and not own_training:
            for cand in _restore_candidates(run, root, out_root, records, reuse):
                why = copy_finished_run(sweep, run, cand, work)
                if why is None:
                    finished, restored = True, cand
                    break
                if selected:
                    print(f"    not taken from {cand}: {why}", flush=True)
        label = run["id"] + (f" seed {run['seed']}" if "seed" in run else "")
        print(f"[{n}/{len(runs)}] {label}" + ("" if selected else (" (not selected)" if finished
                                                                   else " (not selected, no results)"))
              + (f" (results of {restored}: same config and test command)" if restored else ""), flush=True)
        if dry_run or not (selected or finished):
            continue
        log = os.path.join(work, "sweep.log")
        t0 = time.time()
        pending = [name for name, d in test_dirs.items()
                   if selected and not os.path.isfile(os.path.join(d, "metrics.json"))]
        if pending and reuse and not os.path.isdir(reuse):
            reuse = None
        if pending and reuse and not os.path.isfile(os.path.join(work, "last_checkpoint")):
            try:
                reuse_training(run, work, reuse)
            except (FileNotFoundError, ValueError) as e:  # nothing (or something else) to reuse: train
                print(f"    {e}; training it", flush=True)
                reuse = None
        elif pending and reuse and not os.path.isfile(os.path.join(work, "reused_from.txt")):
            reuse = None  # a training of its own, interrupted: resumed below
        if pending and "train" in sweep.get("steps", ["train", "test"]) and not reuse:
            os.makedirs(work, exist_ok=True)
            opts = ["--cfg-options", *run["options"]] if run["options"] else []
            resume = ["--resume"] if os.path.isfile(os.path.join(work, "last_checkpoint")) else []
            _run([python, "tools/train.py", run["config"], "--work-dir", work, *resume, *opts], log)
        for name in pending:
            ckpt = resolve_last_checkpoint(work)
            test_opts = list(run["options"]) + list(sweep.get("test_options", [])) + list(test_sets[name])
            variant = ["--variant", run["variant"]] if run.get("variant") else []
            _run([python, "tools/test.py", run["config"], ckpt, "--work-dir", work, "--out-dir",
                  test_dirs[name], *sweep.get("test_args", []), *variant,
                  *(["--cfg-options", *test_opts] if test_opts else [])], log)
        if pending:
            write_run_file(sweep, run, work)
            print(f"    done in {time.time() - t0:.0f} s", flush=True)
        shared = shared_record(sweep, run, root, records, reused_from)
        if shared:
            print(f"    record: {shared} (the reused run's)", flush=True)
        elif records:
            record = os.path.join(records, sweep["name"], run["work"])
            if not os.path.isfile(os.path.join(record, RUN_FILE)) and os.path.isfile(os.path.join(work, RUN_FILE)):
                why = copy_finished_run(sweep, run, work, record, as_record=True)
                print(f"    record: {record}" if why is None else f"    no record written: {why}", flush=True)
        row = {"run": run["id"], **({"seed": run["seed"]} if "seed" in run else {})}
        for name, d in test_dirs.items():
            with open(os.path.join(d, "metrics.json")) as f:
                metrics = json.load(f)
            metrics.update(_recomputed_columns(sweep, name, metrics, d))
            row.update({(f"{name}:{k}" if name else k): v for k, v in metrics.items()})
        rows.append(row)
        dirs_of[(run["id"], run.get("seed"))] = test_dirs
        if os.path.isfile(os.path.join(work, RUN_FILE)):
            with open(os.path.join(work, RUN_FILE)) as f:
                machines[(run["id"], run.get("seed"))] = json.load(f).get("machine")
    if not dry_run:
        write_tables(sweep, rows, out_root)
        write_summary(sweep, rows, dirs_of, out_root, [r["id"] for r in runs], results_dir, machines)
    return rows


def _recomputed_columns(sweep: dict, test_set: str, metrics: dict, test_dir: str) -> dict:
    """DriveLM columns of the sweep that a run's ``metrics.json`` predates (a metric added after the
    run was tested, e.g. ``drivelm/accuracy_ungated``), recomputed from the run's answer files with the
    bootstrap's scorer, whose full-set scores equal the metric's (tested)."""
    from bevlm.evaluation.bootstrap import DRIVELM_METRICS, PairedBootstrap

    prefix = f"{test_set}:" if test_set else ""
    wanted = [c[len(prefix):] for c in sweep.get("columns") or [] if c.startswith(prefix)]
    missing = [k for k in wanted if k not in metrics and k in DRIVELM_METRICS]
    if not missing:
        return {}
    full = PairedBootstrap([test_dir]).full_scores(0)
    return {k: full[k] for k in missing}


def write_tables(sweep: dict, rows: list[dict], out_root: str) -> None:
    """``results.csv``, ``results.md`` and (if ``pareto`` is set) ``pareto.png``."""
    seeded = sweep_seeds(sweep) is not None
    columns = ["run"] + (["seed"] if seeded else []) + list(_metric_columns(sweep, rows))
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
        pts = [(r.get(xk), r.get(yk), r["run"] + (f"/seed{r['seed']}" if "seed" in r else ""))
               for r in rows if r.get(xk) is not None and r.get(yk) is not None]
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


def _metric_columns(sweep: dict, rows: list[dict]) -> list[str]:
    return list(sweep.get("columns") or sorted({k for r in rows for k in r} - {"run", "seed"}))


def mean_std(values: list) -> tuple[float | None, float | None, int]:
    """``(mean, sample std (ddof=1) or None with fewer than 2 values, n)`` of the numbers in ``values``."""
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v]
    if not nums:
        return None, None, 0
    mean = sum(nums) / len(nums)
    std = (sum((x - mean) ** 2 for x in nums) / (len(nums) - 1)) ** 0.5 if len(nums) > 1 else None
    return mean, std, len(nums)


def _fmt(v, signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.4g}" if signed else f"{v:.4g}"


def _bootstrap_vs_reference(sweep: dict, dirs_of: dict, run_ids: list[str], columns: list[str]) -> dict:
    """``{run: {column: bootstrap entry}}`` and ``{run: reason}`` of the runs not compared.

    For each test set, one :class:`~bevlm.evaluation.bootstrap.PairedBootstrap` over the test
    folders of every (run, seed) that has the official files; the pairs are (reference, run)
    per seed both finished; :meth:`~bevlm.evaluation.bootstrap.PairedBootstrap.compare_pooled`
    averages their differences over the seeds.
    """
    from bevlm.evaluation.bootstrap import PairedBootstrap, find_run_files

    ref = run_ids[0]
    resamples = int(sweep.get("resamples", 1000))
    seed = int(sweep.get("bootstrap_seed", 0))
    test_sets = list(sweep.get("test_sets") or {"": []})
    out: dict = {"diffs": {}, "not_compared": {}, "reference": ref, "resamples": resamples, "seed": seed}
    reasons: dict[str, str] = {}
    for name in test_sets:
        prefix = f"{name}:" if name else ""
        wanted = [c[len(prefix):] for c in columns if c.startswith(prefix) and (name or ":" not in c)]
        _det_bootstrap_vs_reference(out, dirs_of, name, prefix, wanted, run_ids, resamples, seed)
        keys, folders = [], []
        for (run_id, s), dirs in dirs_of.items():
            try:
                find_run_files(dirs[name])
            except FileNotFoundError:
                reasons.setdefault(run_id, f"no drivelm.output.json / drivelm.test_eval.json in {dirs[name]}")
                continue
            keys.append((run_id, s))
            folders.append(dirs[name])
        if not any(k[0] == ref for k in keys):
            for run_id in run_ids[1:]:
                reasons.setdefault(run_id, f"the reference {ref} has no test files")
            continue
        try:
            pb = PairedBootstrap(folders)
        except Exception as e:  # other frames, unreadable files: summarise without the bootstrap
            for run_id in run_ids[1:]:
                reasons.setdefault(run_id, f"{type(e).__name__}: {e}")
            continue
        where = {k: i for i, k in enumerate(keys)}
        for run_id in run_ids[1:]:
            pairs = [(where[(ref, s)], where[(r, s)]) for (r, s) in keys if r == run_id and (ref, s) in where]
            if not pairs:
                reasons.setdefault(run_id, "no seed finished by both it and the reference")
                continue
            res = pb.compare_pooled(pairs, resamples=resamples, seed=seed)
            for metric in wanted:
                if metric in res["metrics"]:
                    entry = dict(res["metrics"][metric], seeds=len(pairs), frames=res["frames"],
                                 scenes=res["scenes"])
                    out["diffs"].setdefault(run_id, {})[prefix + metric] = entry
    out["not_compared"] = {r: reasons.get(r, "no comparable metric") for r in run_ids[1:]
                           if r not in out["diffs"] and any(k[0] == r for k in dirs_of)}
    return out


def _det_bootstrap_vs_reference(out: dict, dirs_of: dict, name: str, prefix: str, wanted: list[str],
                                run_ids: list[str], resamples: int, seed: int) -> None:
    """Detector runs (test folders with ``det_matches.npz``): the nuScenes detection scores of each
    run against the reference, seeds paired and pooled (:func:`bevlm.evaluation.det_bootstrap.
    paired_det_bootstrap`), into ``out["diffs"]`` under the columns ``nuscenes/<score>``."""
    from bevlm.evaluation.det_bootstrap import MATCHES_FILE, DetectionMatches, paired_det_bootstrap

    ref = run_ids[0]
    det = {k: dirs[name] for k, dirs in dirs_of.items() if os.path.isfile(os.path.join(dirs[name], MATCHES_FILE))}
    ref_seeds = {s for (r, s) in det if r == ref}
    for run_id in run_ids[1:]:
        seeds = sorted((s for (r, s) in det if r == run_id and s in ref_seeds), key=str)
        if not seeds:
            continue
        refs = [DetectionMatches.load(det[(ref, s)]) for s in seeds]
        runs = [DetectionMatches.load(det[(run_id, s)]) for s in seeds]
        res = paired_det_bootstrap(refs, runs, resamples, seed, names=([det[(ref, s)] for s in seeds],
                                                                       [det[(run_id, s)] for s in seeds]))
        for metric in wanted:
            key = metric.split("/", 1)[1] if metric.startswith("nuscenes/") else None
            if key in res:
                r = res[key]
                out["diffs"].setdefault(run_id, {})[prefix + metric] = {
                    "a": r["ref"], "b": r["run"], "diff": r["diff"], "lo": r["low"], "hi": r["high"],
                    "significant": r["significant"], "valid": True, "seeds": len(seeds),
                    "frames": len(refs[0].tokens), "scenes": len(set(refs[0].scenes.tolist()))}


def machine_label(m: dict | None) -> str:
    """``"AMD EPYC, 2 cores, avx2+avx512+avx512_bf16, torch 2.14.1"`` (or "not recorded")."""
    if not m:
        return "not recorded"
    return (f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {'+'.join(m.get('isa') or []) or 'no AVX'}"
            + (f", {m['gpu']}" if m.get("gpu") else "") + f", torch {m.get('torch', '?')}")


def summarize(sweep: dict, rows: list[dict], dirs_of: dict, run_ids: list[str], machines: dict | None = None) -> dict:
    """The sweep summary: per run, mean / std / n over seeds of every column, and the bootstrap
    differences to the first run (see the module doc)."""
    columns = _metric_columns(sweep, rows)
    order = [r for r in dict.fromkeys(run_ids) if any(row["run"] == r for row in rows)]
    stats = {}
    for run_id in order:
        mine = [row for row in rows if row["run"] == run_id]
        stats[run_id] = {"seeds": [row.get("seed") for row in mine],
                         "metrics": {c: dict(zip(("mean", "std", "n"), mean_std([row.get(c) for row in mine])))
                                     for c in columns}}
    ref = next(iter(dict.fromkeys(run_ids)), None)  # the sweep's first run, with or without results
    boot = _bootstrap_vs_reference(sweep, dirs_of, [ref] + [r for r in order if r != ref], columns) if order else {}
    labels: dict[str, list[str]] = {}
    for (run_id, seed), m in (machines or {}).items():
        labels.setdefault(machine_label(m), []).append(run_id + (f" seed {seed}" if seed is not None else ""))
    return {"name": sweep["name"], "seeds": sweep_seeds(sweep), "columns": columns, "reference": ref,
            "runs": stats, "bootstrap": boot, "machines": labels}


def summary_markdown(summary: dict) -> list[str]:
    """The summary as Markdown: the mean ± std table, then the differences to the reference."""
    columns, ref = summary["columns"], summary["reference"]
    lines = [f"| run | seeds | {' | '.join(columns)} |", "|" + "---|" * (len(columns) + 2)]
    for run_id, st in summary["runs"].items():
        cells = []
        for c in columns:
            m = st["metrics"][c]
            cells.append("-" if m["mean"] is None else _fmt(m["mean"]) + (f" ± {_fmt(m['std'])}" if m["std"] is not None
                                                                          else ""))
        name = run_id + (" (reference)" if run_id == ref else "")
        lines.append(f"| {name} | {len(st['seeds'])} | {' | '.join(cells)} |")
    boot = summary.get("bootstrap") or {}
    if boot.get("diffs") or boot.get("not_compared"):
        lines += ["", f"Difference to {ref} (mean over the seeds both finished of run - reference) and its "
                      f"95 % interval: paired two-stage cluster bootstrap over the test scenes and their frames, "
                      f"{boot['resamples']} resamples (seed {boot['seed']}); * = the interval excludes 0.", "",
                  f"| run | seeds | {' | '.join(columns)} |", "|" + "---|" * (len(columns) + 2)]
        for run_id, diffs in boot["diffs"].items():
            cells, seeds = [], "-"
            for c in columns:
                d = diffs.get(c)
                if d is None:
                    cells.append("-")
                    continue
                seeds = str(d["seeds"])
                ci = "" if d["lo"] is None else f" [{_fmt(d['lo'], True)}, {_fmt(d['hi'], True)}]"
                cells.append(_fmt(d["diff"], True) + ci + (" *" if d["significant"] else ""))
            lines.append(f"| {run_id} | {seeds} | {' | '.join(cells)} |")
        for run_id, reason in boot["not_compared"].items():
            lines.append(f"\n{run_id}: not compared ({reason})")
    if summary.get("machines"):
        lines += ["", "Machines (from the runs' sweep_run.json): " + "; ".join(
            f"{label} ({len(r)} runs)" for label, r in summary["machines"].items()) + "."]
    return lines


def write_summary(sweep: dict, rows: list[dict], dirs_of: dict, out_root: str, run_ids: list[str],
                  results_dir: str | None = None, machines: dict | None = None) -> dict:
    """``summary.md`` / ``summary.csv`` / ``summary.json`` in ``out_root`` (and, with
    ``results_dir``, ``<results_dir>/<name>.md|.csv|.json``); returns the summary."""
    from bevlm.utils import atomic_write_json

    summary = summarize(sweep, rows, dirs_of, run_ids, machines)
    md = "\n".join(summary_markdown(summary)) + "\n"
    diffs = (summary.get("bootstrap") or {}).get("diffs", {})
    header = ["run", "metric", "seeds", "mean", "std", "diff_vs_reference", "ci_lo", "ci_hi", "significant"]
    table = []
    for run_id, st in summary["runs"].items():
        for c in summary["columns"]:
            m, d = st["metrics"][c], diffs.get(run_id, {}).get(c, {})
            table.append({"run": run_id, "metric": c, "seeds": m["n"], "mean": m["mean"], "std": m["std"],
                          "diff_vs_reference": d.get("diff"), "ci_lo": d.get("lo"), "ci_hi": d.get("hi"),
                          "significant": d.get("significant")})
    for folder, stem in ((out_root, "summary"), (results_dir, sweep["name"])):
        if folder is None:
            continue
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{stem}.md"), "w") as f:
            f.write(md)
        with open(os.path.join(folder, f"{stem}.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(table)
        atomic_write_json(summary, os.path.join(folder, f"{stem}.json"))
    print(md)
    return summary

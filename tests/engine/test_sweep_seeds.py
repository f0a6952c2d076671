"""Sweeps over seeds: work dirs per seed, mean ± std over seeds, pooled paired bootstrap, table formats."""
import csv
import json
import stat

import pytest

from bevlm.engine.sweep import expand_runs, mean_std, run_sweep, summary_markdown

# Stand-in for `python tools/train.py|test.py ...`. The test writes what tools/test.py writes: the
# official files of 6 frames in 3 scenes (one tag-0 and one tag-2 question each), metrics.json.
# Config "a" answers the tag-0 question of frame k right iff (k + seed) is even (accuracy 0.5 for
# every seed); config "b" answers every question right. frame_s is 1 + seed for "a", 2 for "b".
FAKE = r'''#!/usr/bin/env python3
import json, os, re, sys
args = sys.argv[1:]
with open(os.environ["SWEEP_CALLS"], "a") as f:
    f.write(" ".join(args) + "\n")
work = args[args.index("--work-dir") + 1]
opts = args[args.index("--cfg-options") + 1:] if "--cfg-options" in args else []
seed = int(next(o.split("=")[1] for o in opts if o.startswith("randomness.seed=")))
if args[0].endswith("train.py"):
    os.makedirs(work, exist_ok=True)
    open(os.path.join(work, "last_checkpoint"), "w").write(os.path.join(work, "iter_2.pth"))
    if os.environ.get("SWEEP_DUMPS"):  # the config dump tools/train.py leaves (prepared by the test)
        dump = os.path.join(os.environ["SWEEP_DUMPS"], f"{os.path.basename(args[1])[:-3]}_seed{seed}.py")
        open(os.path.join(work, os.path.basename(args[1])), "w").write(open(dump).read())
    sys.exit(0)
out = args[args.index("--out-dir") + 1]
os.makedirs(out, exist_ok=True)
config = os.path.basename(args[1])
test, pred, correct = {}, [], 0
for k in range(6):
    scene, frame = f"scene{k // 2}", f"frame{k}"
    qa = [{"Q": "Is the road clear? Please select the correct answer from the following options: A. Yes B. No",
           "A": "A", "tag": [0]},
          {"Q": "What should the ego vehicle do next?", "A": "Keep going straight at the same speed.", "tag": [2]}]
    test.setdefault(scene, {"key_frames": {}})["key_frames"][frame] = {
        "QA": {"perception": qa[:1], "prediction": [], "planning": qa[1:], "behavior": []}, "image_paths": {}}
    right = config == "b.py" or (k + seed) % 2 == 0
    correct += right
    pred += [{"id": f"{scene}_{frame}_0", "question": qa[0]["Q"], "answer": "A" if right else "B"},
             {"id": f"{scene}_{frame}_1", "question": qa[1]["Q"], "answer": qa[1]["A"]}]
json.dump(test, open(os.path.join(out, "drivelm.test_eval.json"), "w"))
json.dump(pred, open(os.path.join(out, "drivelm.output.json"), "w"))
json.dump({"drivelm/accuracy": correct / 6, "efficiency/frame_s": 1.0 + seed if config == "a.py" else 2.0},
          open(os.path.join(out, "metrics.json"), "w"))
'''


@pytest.fixture()
def fake_python(tmp_path, monkeypatch):
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("SWEEP_CALLS", str(calls))
    return fake, calls


def test_seeds_expand_to_one_work_dir_each():
    sweep = dict(name="s", configs=["configs/a.py", "configs/b.py"], grid={"model.r": [4]}, seeds=[0, 1, 2])
    runs = expand_runs(sweep)
    assert [(r["id"], r["seed"], r["work"]) for r in runs] == [
        ("a__r-4", 0, "a__r-4/seed0"), ("a__r-4", 1, "a__r-4/seed1"), ("a__r-4", 2, "a__r-4/seed2"),
        ("b__r-4", 0, "b__r-4/seed0"), ("b__r-4", 1, "b__r-4/seed1"), ("b__r-4", 2, "b__r-4/seed2")]
    assert runs[4]["options"] == ["model.r=4", "randomness.seed=1"]
    assert [r["work"] for r in expand_runs(dict(sweep, seeds=None))] == ["a__r-4", "b__r-4"]
    for bad in ([], [0, 0], ["0"]):
        with pytest.raises(ValueError, match="seeds must be a non-empty list of distinct integers"):
            expand_runs(dict(sweep, seeds=bad))


def test_mean_std_over_seeds():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0, 3)  # sample std (ddof=1)
    mean, std, n = mean_std([0.1, 0.4, None])
    assert (mean, n) == (pytest.approx(0.25), 2) and std == pytest.approx((2 * 0.15 ** 2) ** 0.5)
    assert mean_std([5.0]) == (5.0, None, 1)
    assert mean_std([None, "x"]) == (None, None, 0)


def test_seeded_sweep_runs_each_seed_and_summarises_with_a_pooled_bootstrap(tmp_path, fake_python):
    fake, calls = fake_python
    sweep = dict(name="seeded", configs=["configs/a.py", "configs/b.py"], steps=["train", "test"], seeds=[0, 1, 2],
                 resamples=400, columns=["drivelm/accuracy", "drivelm/Bleu_1", "efficiency/frame_s",
                                         "drivelm/accuracy_ungated"])
    rows = run_sweep(sweep, root=str(tmp_path / "sweeps"), python=str(fake), results_dir=str(tmp_path / "docs"))
    assert [(r["run"], r["seed"]) for r in rows] == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("b", 2)]
    lines = calls.read_text().splitlines()
    assert len(lines) == 12
    for config in ("a", "b"):
        for seed in (0, 1, 2):
            work = tmp_path / "sweeps" / "seeded" / config / f"seed{seed}"
            assert (work / "test" / "metrics.json").is_file()
            train = [l for l in lines if l.startswith("tools/train.py") and f"--work-dir {work} " in l + " "]
            assert len(train) == 1 and f"randomness.seed={seed}" in train[0]
    out = tmp_path / "sweeps" / "seeded"
    assert "| run | seed | drivelm/accuracy |" in (out / "results.md").read_text()

    summary = json.loads((out / "summary.json").read_text())
    a, b = summary["runs"]["a"]["metrics"], summary["runs"]["b"]["metrics"]
    assert a["drivelm/accuracy"] == {"mean": 0.5, "std": 0.0, "n": 3}
    assert a["efficiency/frame_s"] == {"mean": 2.0, "std": 1.0, "n": 3}
    assert b["drivelm/accuracy"] == {"mean": 1.0, "std": 0.0, "n": 3}
    # columns the runs' metrics.json lacks (written before the metric existed) are recomputed from
    # their answer files: the one tag-0 question per frame is never gated, so = the accuracy
    assert a["drivelm/accuracy_ungated"] == {"mean": 0.5, "std": 0.0, "n": 3}
    assert b["drivelm/accuracy_ungated"]["mean"] == 1.0 and b["drivelm/Bleu_1"]["mean"] == pytest.approx(1.0)
    d = summary["bootstrap"]["diffs"]["b"]["drivelm/accuracy"]
    # seeds 0 and 2 get frames 0, 2, 4 right, seed 1 frames 1, 3, 5: on any resample the seed mean of
    # A's accuracy lies in [1/3, 2/3], so the pooled difference does too (and excludes 0)
    assert d["diff"] == pytest.approx(0.5) and d["seeds"] == 3 and d["frames"] == 6 and d["scenes"] == 3
    assert 1 / 3 - 1e-12 <= d["lo"] < 0.5 < d["hi"] <= 2 / 3 + 1e-12 and d["significant"]
    bleu = summary["bootstrap"]["diffs"]["b"]["drivelm/Bleu_1"]
    assert bleu["diff"] == 0.0 and bleu["lo"] == bleu["hi"] == 0.0 and not bleu["significant"]
    assert summary["bootstrap"]["not_compared"] == {}

    md = (out / "summary.md").read_text()
    assert md == (tmp_path / "docs" / "seeded.md").read_text()
    assert "| run | seeds | drivelm/accuracy | drivelm/Bleu_1 | efficiency/frame_s | drivelm/accuracy_ungated |" in md
    assert "| a (reference) | 3 | 0.5 ± 0 | " in md and " | 2 ± 1 |" in md
    # frame_s has no per-frame records here (no per_frame.json): its difference is not resampled
    assert f"| b | 3 | +0.5 [{d['lo']:+.4g}, {d['hi']:+.4g}] * | +0 [+0, +0] | - | +0.5 [" in md
    with open(tmp_path / "docs" / "seeded.csv") as f:
        table = list(csv.DictReader(f))
    row = next(r for r in table if r["run"] == "b" and r["metric"] == "drivelm/accuracy")
    assert row["seeds"] == "3" and float(row["diff_vs_reference"]) == pytest.approx(0.5)
    assert row["significant"] == "True"
    # resumable: a finished seeded sweep runs nothing again
    run_sweep(sweep, root=str(tmp_path / "sweeps"), python=str(fake))
    assert len(calls.read_text().splitlines()) == 12


def test_summary_without_test_files_says_why(tmp_path):
    summary = {"columns": ["m"], "reference": "a",
               "runs": {"a": {"seeds": [None], "metrics": {"m": {"mean": 0.25, "std": None, "n": 1}}},
                        "b": {"seeds": [None], "metrics": {"m": {"mean": None, "std": None, "n": 0}}}},
               "bootstrap": {"diffs": {}, "not_compared": {"b": "no drivelm.output.json"}, "resamples": 10,
                             "seed": 0}}
    md = summary_markdown(summary)
    assert md[:4] == ["| run | seeds | m |", "|---|---|---|", "| a (reference) | 1 | 0.25 |", "| b | 1 | - |"]
    assert md[-1] == "\nb: not compared (no drivelm.output.json)"


def test_seeded_sweep_reuses_a_training_only_for_its_seed(tmp_path, fake_python):
    import os

    from mmengine.config import Config

    from tests.conftest import REPO

    fake, calls = fake_python
    config = os.path.join(REPO, "configs", "bev_vlm_tiny.py")
    src = tmp_path / "trained"
    src.mkdir()
    cfg = Config.fromfile(config)
    cfg.randomness.seed = 1
    cfg.dump(str(src / "bev_vlm_tiny.py"))
    (src / "last_checkpoint").write_text(str(src / "iter_3.pth"))
    sweep = dict(name="reuse_seeds", configs=[config], steps=["train", "test"], seeds=[0, 1],
                 reuse={"bev_vlm_tiny": str(src)}, columns=["drivelm/accuracy"])
    run_sweep(sweep, root=str(tmp_path / "sweeps"), python=str(fake))
    lines = calls.read_text().splitlines()
    # seed 0 differs from the source in randomness.seed: trained; seed 1 is the source's: reused
    assert [line.split()[0] for line in lines] == ["tools/train.py", "tools/test.py", "tools/test.py"]
    assert "seed0" in lines[0] and str(src / "iter_3.pth") in lines[2] and "seed1" in lines[2]


def test_reuse_ignores_what_test_py_adds_but_not_training_keys(tmp_path, fake_python):
    """tools/test.py re-dumps the config into the work dir with its inference hook and strict loading:
    a training is still the same training; a changed training key is not."""
    import os

    from mmengine.config import Config

    from tests.conftest import REPO

    fake, calls = fake_python
    config = os.path.join(REPO, "configs", "bev_vlm_tiny.py")
    for name, lr in (("same", None), ("other", 0.5)):
        src = tmp_path / name / "seed0"
        src.mkdir(parents=True)
        cfg = Config.fromfile(config)
        cfg.randomness.seed = 0
        cfg.custom_hooks = list(cfg.get("custom_hooks") or []) + [
            dict(type="InferenceVariantHook", name="lossless", variant=dict(share_prompt_cache=True)),
            dict(type="AnswerBudgetCheckHook", out_file=str(src / "test" / "answer_budget.json"))]
        cfg.default_hooks.plain_checkpoint = dict(type="PlainCheckpointHook", strict_load=True)
        if lr is not None:
            cfg.optim_wrapper.optimizer.lr = lr
        cfg.dump(str(src / "bev_vlm_tiny.py"))
        (src / "last_checkpoint").write_text(str(src / "iter_3.pth"))
    for name, first in (("same", "tools/test.py"), ("other", "tools/train.py")):
        calls.write_text("")
        sweep = dict(name=f"reuse_{name}", configs=[config], steps=["train", "test"], seeds=[0],
                     reuse={"bev_vlm_tiny": str(tmp_path / name)}, columns=["drivelm/accuracy"])
        run_sweep(sweep, root=str(tmp_path / "sweeps"), python=str(fake))
        assert calls.read_text().splitlines()[0].split()[0] == first, name


def test_reuse_of_a_training_dumped_under_another_config_name(tmp_path, fake_python):
    """An ablation that became the default: its run dir holds `<ablation>.py`, not `<default>.py`. It is
    reused when that one dumped config equals the default key by key, and retrained when it does not."""
    import os

    from mmengine.config import Config

    from tests.conftest import REPO

    fake, calls = fake_python
    config = os.path.join(REPO, "configs", "bev_vlm_tiny.py")
    for name, lr in (("same", None), ("other", 0.5)):
        src = tmp_path / name / "seed0"
        src.mkdir(parents=True)
        cfg = Config.fromfile(config)
        cfg.randomness.seed = 0
        if lr is not None:
            cfg.optim_wrapper.optimizer.lr = lr
        cfg.dump(str(src / "bev_vlm_tiny_some-ablation.py"))
        (src / "last_checkpoint").write_text(str(src / "iter_3.pth"))
    for name, first in (("same", "tools/test.py"), ("other", "tools/train.py")):
        calls.write_text("")
        sweep = dict(name=f"renamed_{name}", configs=[config], steps=["train", "test"], seeds=[0],
                     reuse={"bev_vlm_tiny": str(tmp_path / name)}, columns=["drivelm/accuracy"])
        run_sweep(sweep, root=str(tmp_path / "sweeps"), python=str(fake))
        assert calls.read_text().splitlines()[0].split()[0] == first, name


def test_a_run_dir_of_another_config_stops_the_sweep_before_any_work(tmp_path, fake_python):
    """A finished run dir whose dumped config is not the sweep's config (the config changed since, e.g.
    a new default) would be tabled under the wrong name: refused before anything runs, naming the key."""
    import os

    import pytest
    from mmengine.config import Config

    from tests.conftest import REPO

    fake, calls = fake_python
    config = os.path.join(REPO, "configs", "bev_vlm_tiny.py")
    root = tmp_path / "sweeps"
    for name, lr in (("stale", 0.5), ("fresh", None)):
        work = root / name / "bev_vlm_tiny" / "seed0"
        (work / "test").mkdir(parents=True)
        cfg = Config.fromfile(config)
        cfg.randomness.seed = 0
        if lr is not None:
            cfg.optim_wrapper.optimizer.lr = lr
        cfg.model.test_cfg.max_new_tokens = 7  # test-time decoding settings are not the training's
        cfg.dump(str(work / "bev_vlm_tiny.py"))
        (work / "test" / "metrics.json").write_text('{"drivelm/accuracy": 0.5}')
    calls.write_text("")
    with pytest.raises(ValueError, match="optim_wrapper.optimizer.lr.*Move that dir away"):
        run_sweep(dict(name="stale", configs=[config], seeds=[0, 1], columns=["drivelm/accuracy"]),
                  root=str(root), python=str(fake))
    assert calls.read_text() == "" and not (root / "stale" / "bev_vlm_tiny" / "seed1").exists()
    rows = run_sweep(dict(name="fresh", configs=[config], seeds=[0], columns=["drivelm/accuracy"]),
                     root=str(root), python=str(fake), only_seeds=[0], only=[])
    assert rows == [{"run": "bev_vlm_tiny", "seed": 0, "drivelm/accuracy": 0.5}]


def test_seed_selection_runs_only_those_seeds_and_checks_them(tmp_path, fake_python):
    fake, calls = fake_python
    sweep = dict(name="picked", configs=["configs/a.py", "configs/b.py"], steps=["train", "test"], seeds=[0, 1, 2],
                 resamples=50, columns=["drivelm/accuracy"])
    rows = run_sweep(sweep, root=str(tmp_path / "sweeps"), python=str(fake), only=["b"], only_seeds=[1])
    assert [(r["run"], r["seed"]) for r in rows] == [("b", 1)]
    lines = calls.read_text().splitlines()
    assert len(lines) == 2 and all("randomness.seed=1" in line and "/b/seed1" in line for line in lines)
    # seed 0 of every run next: the finished seed 1 of b is tabled, not rerun
    rows = run_sweep(sweep, root=str(tmp_path / "sweeps"), python=str(fake), only_seeds=[0])
    assert [(r["run"], r["seed"]) for r in rows] == [("a", 0), ("b", 0), ("b", 1)]
    assert len(calls.read_text().splitlines()) == 6
    with pytest.raises(ValueError, match=r"seeds \[7\] are not among its seeds \[0, 1, 2\]"):
        run_sweep(sweep, root=str(tmp_path / "sweeps"), python=str(fake), only_seeds=[7])
    with pytest.raises(ValueError, match="has no `seeds=\\[...\\]`"):
        run_sweep(dict(sweep, seeds=None), root=str(tmp_path / "sweeps"), python=str(fake), only_seeds=[0])


def test_last_checkpoint_of_a_moved_run_folder_is_found_beside_it(tmp_path):
    """mmengine's last_checkpoint holds an absolute path; a run folder moved since (another clone, a
    removed worktree) is read from the file of the same name beside it."""
    from bevlm.engine.sweep import resolve_last_checkpoint

    work = tmp_path / "run"
    work.mkdir()
    (work / "last_checkpoint").write_text("/gone/worktree/work_dirs/run/iter_100.pth\n")
    assert resolve_last_checkpoint(str(work)) == "/gone/worktree/work_dirs/run/iter_100.pth"  # nothing beside
    (work / "iter_100.pth").write_bytes(b"x")
    assert resolve_last_checkpoint(str(work)) == str(work / "iter_100.pth")
    elsewhere = tmp_path / "iter_7.pth"
    elsewhere.write_bytes(b"x")
    (work / "last_checkpoint").write_text(str(elsewhere))
    assert resolve_last_checkpoint(str(work)) == str(elsewhere)  # an existing named file wins

"""tools/sweep.py machinery with a stand-in interpreter: runs, test sets, tables, resumption."""
import json
import os
import stat

from bevlm.engine.sweep import expand_runs, run_sweep

FAKE = r'''#!/usr/bin/env python3
# Stand-in for `python tools/train.py|test.py ...`: logs the call, writes what the real tools write.
import json, os, sys
args = sys.argv[1:]
with open(os.environ["SWEEP_CALLS"], "a") as f:
    f.write(" ".join(args) + "\n")
work = args[args.index("--work-dir") + 1]
if args[0].endswith("train.py"):
    os.makedirs(work, exist_ok=True)
    open(os.path.join(work, "last_checkpoint"), "w").write(os.path.join(work, "iter_2.pth"))
else:
    out = args[args.index("--out-dir") + 1]
    os.makedirs(out, exist_ok=True)
    opts = args[args.index("--cfg-options") + 1:] if "--cfg-options" in args else []
    score = 0.5 if any("night" in o for o in opts) else 0.25
    json.dump({"drivelm/gpt_free_final": score, "efficiency/frame_s": float(len(opts))},
              open(os.path.join(out, "metrics.json"), "w"))
'''


def _fake_python(tmp_path, monkeypatch):
    """The stand-in interpreter and the file it logs its calls to."""
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("SWEEP_CALLS", str(calls))
    return fake, calls


def test_sweep_with_test_sets_and_resume(tmp_path, monkeypatch):
    fake, calls = _fake_python(tmp_path, monkeypatch)
    sweep = dict(name="demo", configs=["configs/a.py", "configs/b.py"], grid={"model.r": [4, 8]},
                 steps=["train", "test"],
                 test_sets={"day": ["test_dataloader.dataset.domain='day'"],
                            "night": ["test_dataloader.dataset.domain='night'"]},
                 columns=["day:drivelm/gpt_free_final", "night:drivelm/gpt_free_final"],
                 pareto=("day:efficiency/frame_s", "day:drivelm/gpt_free_final"))
    assert [r["id"] for r in expand_runs(sweep)] == ["a__r-4", "a__r-8", "b__r-4", "b__r-8"]
    rows = run_sweep(sweep, root=str(tmp_path / "sweeps"), python=str(fake))
    assert len(rows) == 4
    assert all(r["day:drivelm/gpt_free_final"] == 0.25 and r["night:drivelm/gpt_free_final"] == 0.5 for r in rows)
    lines = calls.read_text().splitlines()
    assert sum(l.startswith("tools/train.py") for l in lines) == 4
    assert sum(l.startswith("tools/test.py") for l in lines) == 8
    out = tmp_path / "sweeps" / "demo"
    assert (out / "results.csv").is_file() and (out / "pareto.png").is_file()
    assert "| a__r-4 | 0.25 | 0.5 |" in (out / "results.md").read_text()
    # a finished sweep runs nothing again; a missing test set reruns only that test
    os.remove(out / "b__r-8" / "test_night" / "metrics.json")
    run_sweep(sweep, root=str(tmp_path / "sweeps"), python=str(fake))
    new = calls.read_text().splitlines()[len(lines):]
    assert len(new) == 2 and new[0].startswith("tools/train.py") and "--resume" in new[0]
    assert new[1].startswith("tools/test.py") and "test_night" in new[1]


def test_sweep_reuses_a_matching_training_and_passes_test_args(tmp_path, monkeypatch, capsys):
    from mmengine.config import Config

    from tests.conftest import REPO

    fake, calls = _fake_python(tmp_path, monkeypatch)
    config = os.path.join(REPO, "configs", "bev_vlm_tiny.py")
    src = tmp_path / "trained"
    src.mkdir()
    cfg = Config.fromfile(config)
    cfg.work_dir = str(src)
    cfg.test_dataloader.dataset.frame_stride = 4  # test-time keys may differ (tools/test.py re-dumps)
    cfg.dump(str(src / "bev_vlm_tiny.py"))
    (src / "last_checkpoint").write_text(str(src / "iter_3.pth"))
    sweep = dict(name="reuse", configs=[config], steps=["train", "test"], reuse={"bev_vlm_tiny": str(src)},
                 test_args=["--variant", "lossless"], columns=["drivelm/gpt_free_final"])
    run_sweep(sweep, root=str(tmp_path / "sweeps"), python=str(fake))
    lines = calls.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tools/test.py")  # no training
    assert str(src / "iter_3.pth") in lines[0] and "--variant lossless" in lines[0]
    assert (tmp_path / "sweeps" / "reuse" / "bev_vlm_tiny" / "reused_from.txt").is_file()
    # a work dir that trained something else is not reused (the differing key is named): trained anew
    cfg.model.llm.lora.r = cfg.model.llm.lora.r + 1
    cfg.dump(str(src / "bev_vlm_tiny.py"))
    run_sweep(dict(sweep, name="reuse2"), root=str(tmp_path / "sweeps"), python=str(fake))
    assert "model.llm.lora.r" in capsys.readouterr().out
    new = calls.read_text().splitlines()[1:]
    assert [line.split()[0] for line in new] == ["tools/train.py", "tools/test.py"]


def test_sweep_only_runs_the_selected_runs_and_tables_every_finished_one(tmp_path, monkeypatch):
    import pytest

    fake, calls = _fake_python(tmp_path, monkeypatch)
    sweep = dict(name="part", configs=["configs/a.py", "configs/b.py", "configs/c.py"], steps=["train", "test"],
                 columns=["drivelm/gpt_free_final"])
    rows = run_sweep(sweep, root=str(tmp_path), python=str(fake), only=["b"])
    assert [r["run"] for r in rows] == ["b"]
    assert [line.split()[1] for line in calls.read_text().splitlines()] == ["configs/b.py", "configs/b.py"]
    rows = run_sweep(sweep, root=str(tmp_path), python=str(fake), only=["a"])
    assert [r["run"] for r in rows] == ["a", "b"]  # b has results: tabled, not rerun
    assert len(calls.read_text().splitlines()) == 4
    assert "| b |" in (tmp_path / "part" / "results.md").read_text()
    with pytest.raises(ValueError, match="no runs"):
        run_sweep(sweep, root=str(tmp_path), python=str(fake), only=["zzz"])


def test_sweep_over_inference_variants_reuses_one_training(tmp_path, monkeypatch):
    from mmengine.config import Config

    from tests.conftest import REPO

    fake, calls = _fake_python(tmp_path, monkeypatch)
    config = os.path.join(REPO, "configs", "bev_vlm_tiny.py")
    src = tmp_path / "trained"
    src.mkdir()
    cfg = Config.fromfile(config)
    cfg.dump(str(src / "bev_vlm_tiny.py"))
    (src / "last_checkpoint").write_text(str(src / "iter_3.pth"))
    sweep = dict(name="variants", configs=[config], steps=["test"], variants=["baseline", "lossless"],
                 reuse={"bev_vlm_tiny": str(src)}, columns=["drivelm/gpt_free_final"])
    runs = expand_runs(sweep)
    assert [(r["id"], r["base_id"], r["variant"]) for r in runs] == [
        ("bev_vlm_tiny__baseline", "bev_vlm_tiny", "baseline"), ("bev_vlm_tiny__lossless", "bev_vlm_tiny", "lossless")]
    rows = run_sweep(sweep, root=str(tmp_path / "sweeps"), python=str(fake))
    assert [r["run"] for r in rows] == ["bev_vlm_tiny__baseline", "bev_vlm_tiny__lossless"]
    lines = calls.read_text().splitlines()
    assert len(lines) == 2 and all(line.startswith("tools/test.py") and str(src / "iter_3.pth") in line
                                   for line in lines)  # no training: both reuse the one checkpoint
    assert "--variant baseline" in lines[0] and "--variant lossless" in lines[1]

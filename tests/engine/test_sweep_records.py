"""Run records: a finished sweep run is kept as plain files (config as JSON, test command, machine,
test files) and restored from them on a fresh checkout, instead of being trained again."""
import json
import os
import shutil

import pytest
from mmengine.config import Config

from bevlm.engine.sweep import RECORD_CONFIG, RUN_FILE, run_sweep
from tests.conftest import REPO
from tests.engine.test_sweep_seeds import fake_python  # noqa: F401  (fixture)

TINY = os.path.join(REPO, "configs", "bev_vlm_tiny.py")


@pytest.fixture()
def two_configs(tmp_path, monkeypatch):
    """The tiny config as run "a"-style (half right) and a copy named b.py (all right, see FAKE), with the
    config dumps the fake training leaves for each seed."""
    b = tmp_path / "cfgs" / "b.py"
    b.parent.mkdir()
    b.write_text(f"_base_ = [{TINY!r}]\n")
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    for path in (TINY, str(b)):
        for seed in (0, 1):
            cfg = Config.fromfile(path)
            cfg.randomness.seed = seed
            cfg.dump(str(dumps / f"{os.path.basename(path)[:-3]}_seed{seed}.py"))
    monkeypatch.setenv("SWEEP_DUMPS", str(dumps))
    return [TINY, str(b)]


def _sweep(configs, **kw):
    return dict(dict(name="rec", configs=configs, steps=["train", "test"], seeds=[0, 1], resamples=200,
                     test_args=["--variant", "lossless"], columns=["drivelm/accuracy", "efficiency/frame_s"]), **kw)


def test_records_are_written_and_a_fresh_checkout_restores_them(tmp_path, fake_python, two_configs):
    fake, calls = fake_python
    records = tmp_path / "docs" / "runs"
    sweep = _sweep(two_configs)
    rows = run_sweep(sweep, root=str(tmp_path / "sweeps"), python=str(fake), records=str(records))
    assert len(calls.read_text().splitlines()) == 8
    rec = records / "rec" / "b" / "seed1"
    meta = json.loads((rec / RUN_FILE).read_text())
    assert meta["test"]["test_args"] == ["--variant", "lossless"] and meta["seed"] == 1
    assert meta["machine"]["cores"] >= 1 and meta["machine"]["torch"]
    assert sorted(os.listdir(rec / "test")) == ["drivelm.output.json", "drivelm.test_eval.json", "metrics.json"]
    assert not [f for f in os.listdir(rec) if f.endswith(".py")]  # nothing in a record is code
    cfg = json.loads((rec / RECORD_CONFIG).read_text())
    assert cfg["flat"]["randomness.seed"] == 1
    summary = json.loads((tmp_path / "sweeps" / "rec" / "summary.json").read_text())

    # a fresh checkout: no work dirs; every run comes back from its record, nothing is run
    shutil.rmtree(tmp_path / "sweeps")
    calls.write_text("")
    again = run_sweep(sweep, root=str(tmp_path / "sweeps"), python=str(fake), records=str(records))
    assert calls.read_text() == ""
    assert again == rows
    restored = json.loads((tmp_path / "sweeps" / "rec" / "summary.json").read_text())
    assert restored["bootstrap"] == summary["bootstrap"] and restored["runs"] == summary["runs"]
    assert restored["machines"] == summary["machines"] and len(next(iter(restored["machines"].values()))) == 4
    md = (tmp_path / "sweeps" / "rec" / "summary.md").read_text()
    assert "Machines (from the runs' sweep_run.json): " in md and "(4 runs)" in md


def test_a_record_of_another_test_command_or_config_is_not_taken(tmp_path, fake_python, two_configs, capsys):
    fake, calls = fake_python
    records = tmp_path / "runs"
    run_sweep(_sweep(two_configs[:1]), root=str(tmp_path / "s1"), python=str(fake), records=str(records))
    # tested otherwise: trained and tested again
    calls.write_text("")
    run_sweep(_sweep(two_configs[:1], test_args=[]), root=str(tmp_path / "s2"), python=str(fake),
              records=str(records), only_seeds=[0])
    assert [line.split()[0] for line in calls.read_text().splitlines()] == ["tools/train.py", "tools/test.py"]
    assert "was tested with" in capsys.readouterr().out
    # a record whose config differs in a training key: not taken, the key is named
    cfg_path = records / "rec" / "bev_vlm_tiny" / "seed1" / RECORD_CONFIG
    cfg = json.loads(cfg_path.read_text())
    cfg["flat"]["optim_wrapper.optimizer.lr"] = 0.5
    cfg_path.write_text(json.dumps(cfg))
    calls.write_text("")
    run_sweep(_sweep(two_configs[:1]), root=str(tmp_path / "s3"), python=str(fake), records=str(records),
              only_seeds=[1])
    assert [line.split()[0] for line in calls.read_text().splitlines()] == ["tools/train.py", "tools/test.py"]
    assert "optim_wrapper.optimizer.lr" in capsys.readouterr().out


def test_a_reused_run_comes_from_the_other_sweeps_record(tmp_path, fake_python, two_configs):
    """Sweep B reuses A's run of the tiny config; A's work dirs are gone (fresh checkout), its records are
    not: B takes A's results without training or testing and writes no second record of them; a fresh
    checkout restores B from A's record again."""
    fake, calls = fake_python
    root, records = tmp_path / "sweeps", tmp_path / "runs"
    run_sweep(_sweep(two_configs[:1], name="A"), root=str(root), python=str(fake), records=str(records))
    shutil.rmtree(root)
    calls.write_text("")
    sweep_b = _sweep(two_configs, name="B", reuse={"bev_vlm_tiny": str(root / "A" / "bev_vlm_tiny")})
    rows = run_sweep(sweep_b, root=str(root), python=str(fake), records=str(records))
    lines = calls.read_text().splitlines()
    assert len(lines) == 4 and all("/B/b/seed" in line for line in lines)  # only b trained and tested
    assert [r["run"] for r in rows] == ["bev_vlm_tiny", "bev_vlm_tiny", "b", "b"]
    meta = json.loads((root / "B" / "bev_vlm_tiny" / "seed0" / RUN_FILE).read_text())
    assert meta["results_from"] == str(records / "A" / "bev_vlm_tiny" / "seed0")
    assert not (records / "B" / "bev_vlm_tiny").exists()  # A's record serves B: no copy
    assert (records / "B" / "b" / "seed0" / "test" / "metrics.json").is_file()
    summary = json.loads((root / "B" / "summary.json").read_text())
    assert summary["bootstrap"]["diffs"]["b"]["drivelm/accuracy"]["seeds"] == 2
    shutil.rmtree(root)
    calls.write_text("")
    again = run_sweep(sweep_b, root=str(root), python=str(fake), records=str(records))
    assert calls.read_text() == "" and again == rows


def test_a_reused_run_tested_otherwise_gets_its_own_record(tmp_path, fake_python, two_configs):
    """B reuses A's training but tests it with another command: B's results are its own, so is its record."""
    fake, calls = fake_python
    root, records = tmp_path / "sweeps", tmp_path / "runs"
    run_sweep(_sweep(two_configs[:1], name="A", seeds=[0]), root=str(root), python=str(fake), records=str(records))
    calls.write_text("")
    sweep_b = _sweep(two_configs[:1], name="B", seeds=[0], test_args=[],
                     reuse={"bev_vlm_tiny": str(root / "A" / "bev_vlm_tiny")})
    run_sweep(sweep_b, root=str(root), python=str(fake), records=str(records))
    assert [line.split()[0] for line in calls.read_text().splitlines()] == ["tools/test.py"]
    meta = json.loads((records / "B" / "bev_vlm_tiny" / "seed0" / RUN_FILE).read_text())
    assert meta["test"]["test_args"] == []


def test_a_record_of_other_test_data_is_not_taken(tmp_path, fake_python, two_configs, capsys):
    """The run file fingerprints the test split (dataset settings, frames and their QA): after the world
    is generated anew with other content, a record of the old one is not restored."""
    from bevlm.utils import dump_plain_pickle

    fake, calls = fake_python
    world = tmp_path / "world"
    (world / "infos").mkdir(parents=True)

    def write_world(answer):
        frames = [{"scene_token": "s0", "token": f"f{k}", "drivelm": {"QA": {"perception": [{"Q": "q", "A": answer}]}}}
                  for k in range(3)]
        dump_plain_pickle({"metainfo": {}, "data_list": frames}, str(world / "infos" / "bevlm_infos_val.pkl"))

    write_world("yes")
    records = tmp_path / "runs"
    sweep = _sweep(two_configs[:1], seeds=[0], test_options=[f"test_dataloader.dataset.data_root={world}/"])
    run_sweep(sweep, root=str(tmp_path / "s1"), python=str(fake), records=str(records))
    meta = json.loads((records / "rec" / "bev_vlm_tiny" / "seed0" / RUN_FILE).read_text())
    data = meta["test"]["test_data"][""]
    assert len(data["frames_sha256"]) == 64 and data["dataset"]["qa_select"] == "test"
    calls.write_text("")
    run_sweep(sweep, root=str(tmp_path / "s2"), python=str(fake), records=str(records))
    assert calls.read_text() == ""  # same test data: restored
    write_world("no")  # same paths, other content
    run_sweep(sweep, root=str(tmp_path / "s3"), python=str(fake), records=str(records))
    assert [line.split()[0] for line in calls.read_text().splitlines()] == ["tools/train.py", "tools/test.py"]
    assert "was tested with" in capsys.readouterr().out


def test_a_record_of_other_decoding_settings_is_not_taken(tmp_path, fake_python, two_configs, capsys):
    """The run file fingerprints the config's model.test_cfg: after a config's default decoding
    settings change (same training keys), its record is not restored and the run is tested again."""
    fake, calls = fake_python
    records = tmp_path / "runs"
    sweep = _sweep(two_configs[1:], seeds=[0])
    run_sweep(sweep, root=str(tmp_path / "s1"), python=str(fake), records=str(records))
    meta = json.loads((records / "rec" / "b" / "seed0" / RUN_FILE).read_text())
    assert meta["test"]["model_test_cfg"][""]["max_new_tokens"] == 8
    calls.write_text("")
    run_sweep(sweep, root=str(tmp_path / "s2"), python=str(fake), records=str(records))
    assert calls.read_text() == ""  # same settings: restored
    b = two_configs[1]
    with open(b, "a") as f:
        f.write("model = dict(test_cfg=dict(max_new_tokens=4))\n")
    run_sweep(sweep, root=str(tmp_path / "s3"), python=str(fake), records=str(records))
    assert [line.split()[0] for line in calls.read_text().splitlines()] == ["tools/train.py", "tools/test.py"]
    out = capsys.readouterr().out
    assert "was tested with" in out and "'max_new_tokens': 8" in out


def test_own_results_of_other_decoding_settings_stop_the_sweep_before_work(tmp_path, fake_python, two_configs):
    """A run dir whose test results came from other decoding settings is refused before anything runs
    (they would be tabled as the sweep's), naming the key and the folder to delete."""
    fake, calls = fake_python
    sweep = _sweep(two_configs[1:], seeds=[0])
    root = tmp_path / "s"
    run_sweep(sweep, root=str(root), python=str(fake))
    calls.write_text("")
    with open(two_configs[1], "a") as f:
        f.write("model = dict(test_cfg=dict(max_new_tokens=4))\n")
    with pytest.raises(ValueError, match=r"model_test_cfg: tested with .*'max_new_tokens': 8.*Delete its test folder"):
        run_sweep(sweep, root=str(root), python=str(fake))
    assert calls.read_text() == ""
    shutil.rmtree(root / "rec" / "b" / "seed0" / "test")
    run_sweep(sweep, root=str(root), python=str(fake))
    lines = calls.read_text().splitlines()  # the finished training is resumed (nothing left to do), then tested
    assert [line.split()[0] for line in lines] == ["tools/train.py", "tools/test.py"] and "--resume" in lines[0]

"""Overrides mean what they say; misspelt keys and wrong types stop before any work."""
import os
import subprocess
import sys

import pytest
from mmengine.config import Config

from bevlm.engine.config_check import ConfigError, check_config, merge_cfg_options

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAIN = os.path.join(REPO, "configs", "bev_vlm.py")


def _cfg():
    return Config.fromfile(MAIN)


def test_data_root_override_reaches_every_dataset():
    cfg = _cfg()
    old = cfg.data_root
    datasets = [cfg.train_dataloader.dataset, cfg.test_dataloader.dataset]
    assert all(d.data_root == old for d in datasets)  # copied from the variable when the file was read
    carried = merge_cfg_options(cfg, {"data_root": "/other/world/"})
    assert cfg.data_root == "/other/world/"
    assert all(d.data_root == "/other/world/" for d in datasets)
    assert "train_dataloader.dataset.data_root" in carried and "test_dataloader.dataset.data_root" in carried


def test_explicit_override_of_a_copied_value_wins():
    cfg = _cfg()
    merge_cfg_options(cfg, {"data_root": "/a/", "test_dataloader.dataset.data_root": "/b/"})
    assert cfg.train_dataloader.dataset.data_root == "/a/" and cfg.test_dataloader.dataset.data_root == "/b/"


def test_override_of_a_variable_a_longer_value_was_built_from_is_refused():
    cfg = Config(dict(root="data/x/", ds=dict(type="BEVDriveDataset", ann_file="data/x/infos.pkl")))
    with pytest.raises(ConfigError, match=r"root='/y/'.*ds\.ann_file='data/x/infos\.pkl'.*Fix: override ds\.ann_file"):
        merge_cfg_options(cfg, {"root": "/y/"})
    assert cfg.root == "data/x/"  # refused before merging: nothing changed
    merge_cfg_options(cfg, {"root": "/y/", "ds.ann_file": "/y/infos.pkl"})  # both given: fine
    assert cfg.ds.ann_file == "/y/infos.pkl"


def test_every_shipped_config_passes_the_check():
    for folder, _, files in os.walk(os.path.join(REPO, "configs")):
        if any(part in folder for part in ("_base_", "sweeps", "benchmarks")):
            continue
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                check_config(Config.fromfile(path), path)


@pytest.mark.parametrize("option,match", [
    ({"model.bev_encoder.num_layerz": 2},
     r"model\.bev_encoder\.num_layerz: BEVFormerLiteEncoder has no argument 'num_layerz'\. Fix: use one of \[.*'num_layers'"),
    ({"test_dataloader.dataset.intervall": 2}, r"test_dataloader\.dataset\.intervall: BEVDriveDataset has no argument"),
    ({"train_cfg.max_iters": "abc"}, r"train_cfg\.max_iters='abc' is a str; IterBasedTrainLoop takes int"),
    ({"train_cfg.max_iters": 2.5}, r"train_cfg\.max_iters=2\.5 is a float; IterBasedTrainLoop takes int"),
])
def test_misspelt_key_or_wrong_type_names_path_component_and_valid_keys(option, match):
    cfg = _cfg()
    merge_cfg_options(cfg, option)
    with pytest.raises(ConfigError, match=match):
        check_config(cfg, "configs/bev_vlm.py")


def test_train_tool_stops_on_a_misspelt_key_before_any_work(tmp_path):
    work = tmp_path / "work"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "train.py"), MAIN, "--work-dir", str(work),
                           "--cfg-options", "model.bev_encoder.num_layerz=2"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode != 0
    assert "BEVFormerLiteEncoder has no argument 'num_layerz'" in proc.stderr
    assert not work.exists()  # nothing was built or written


def _stage1_checkpoint(path, cfg_text):
    import torch

    torch.save({"meta": {"cfg": cfg_text, "iter": 1}, "state_dict": {}}, path)
    return str(path)


STAGE1_TEXT = ("det_img_size = (160, 90)\n"
               "train_dataloader = dict(batch_size=2, dataset=dict(pipeline=[dict(type='LoadMultiViewImages'), "
               "dict(type='ResizeMultiViewImages', size=(160, 90)), dict(type='PackDriveInputs')]))\n")


def test_load_from_trained_on_another_image_size_is_refused(tmp_path):
    from bevlm.engine.config_check import check_load_from_input

    cfg = _cfg()
    cfg.load_from = _stage1_checkpoint(tmp_path / "stage1.pth", STAGE1_TEXT)
    cfg.train_dataloader.dataset.pipeline = [dict(type="ResizeMultiViewImages", size=(160, 90))]
    check_load_from_input(cfg, "main.py")  # same size: passes
    cfg.train_dataloader.dataset.pipeline = [dict(type="ResizeMultiViewImages", size=(320, 180))]
    with pytest.raises(ValueError, match=r"main.py: load_from=.*stage1.pth was trained on 160x90 .* feeds 320x180.*Fix"):
        check_load_from_input(cfg, "main.py")
    cfg.load_from = None  # nothing to check
    check_load_from_input(cfg, "main.py")


def test_load_from_saved_config_is_read_not_run(tmp_path):
    from bevlm.engine.config_check import check_load_from_input

    marker = tmp_path / "ran"
    text = STAGE1_TEXT + f"open({str(marker)!r}, 'w').write('x')\nraise SystemExit('the text ran')\n"
    cfg = _cfg()
    cfg.load_from = _stage1_checkpoint(tmp_path / "stage1.pth", text)
    cfg.train_dataloader.dataset.pipeline = [dict(type="ResizeMultiViewImages", size=(320, 180))]
    with pytest.raises(ValueError, match="trained on 160x90"):
        check_load_from_input(cfg, "main.py")
    assert not marker.exists()
    # a saved config that is not Python, or has no resize: not checked
    for other in ("this is not python (", "train_dataloader = dict(batch_size=2)\n"):
        cfg.load_from = _stage1_checkpoint(tmp_path / "other.pth", other)
        check_load_from_input(cfg, "main.py")


def test_train_tool_stops_on_a_load_from_of_another_image_size(tmp_path):
    ckpt = _stage1_checkpoint(tmp_path / "stage1.pth", STAGE1_TEXT.replace("(160, 90)", "(320, 180)"))
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "train.py"), os.path.join(REPO, "configs", "bev_vlm.py"),
                        "--work-dir", str(tmp_path / "work"), "--cfg-options", f"load_from={ckpt}"],
                       capture_output=True, text=True, cwd=str(tmp_path))
    assert r.returncode != 0
    assert "was trained on 320x180 images" in r.stderr and "feeds 160x90" in r.stderr and "Fix:" in r.stderr
    assert not (tmp_path / "work").exists()  # stopped before any work

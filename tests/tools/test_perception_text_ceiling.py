"""tools/perception_text_ceiling.py end to end on the tiny world: a detector config and checkpoint, the
line of every scored frame scored as its important-objects answer."""
import json
import os
import subprocess
import sys

import torch
from mmengine.config import Config

from bevlm.registry import MODELS
from tests.conftest import REPO
from tests.models.test_bev_det import _tiny_det_cfg


def det_and_vlm_configs(tiny_world, tmp_path) -> tuple:
    """A tiny detector config, its (random, seeded) checkpoint and a tiny VLM config on the tiny world:
    the inputs of the ceiling tools."""
    cfg, _ = _tiny_det_cfg()
    det_cfg = tmp_path / "det.py"
    Config(dict(model=cfg)).dump(str(det_cfg))
    torch.manual_seed(0)
    ckpt = tmp_path / "det.pth"
    torch.save({"state_dict": MODELS.build(cfg).state_dict()}, ckpt)
    vlm_cfg = tmp_path / "vlm.py"
    vlm_cfg.write_text(f"_base_ = [{REPO + '/configs/bev_vlm_tiny.py'!r}]\n"
                       f"test_dataloader = dict(dataset=dict(data_root={str(tiny_world) + '/'!r}))\n")
    return det_cfg, ckpt, vlm_cfg


def test_table_of_the_lines_match_f1(tiny_world, tmp_path):
    det_cfg, ckpt, vlm_cfg = det_and_vlm_configs(tiny_world, tmp_path)
    out = tmp_path / "ceiling.json"
    proc = subprocess.run([sys.executable, "tools/perception_text_ceiling.py", str(det_cfg), str(ckpt),
                           "--vlm-config", str(vlm_cfg), "--thr", "0.0", "1.1", "--objects", "3", "--out", str(out)],
                          cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {r["score_thr"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {0.0, 1.1} and rows[0.0]["frames"] == rows[1.1]["frames"] > 0
    assert rows[1.1]["match_f1"] == 0.0  # nothing above a score of 1.1: "Detected: nothing." has no c-tag
    assert 0.0 <= rows[0.0]["match_f1"] <= 100.0
    assert "| 1.1 | 3 |" in proc.stdout

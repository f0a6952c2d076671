"""tools/grounding_ceiling.py end to end on the tiny world: the world's collision-action rule applied to
the grounded detections of every scored frame's collision-action questions."""
import json
import os
import subprocess
import sys

from mmengine.config import Config
from mmengine.registry import init_default_scope

from bevlm.registry import DATASETS
from tests.conftest import REPO
from tests.tools.test_perception_text_ceiling import det_and_vlm_configs


def test_table_of_the_rule_on_the_grounding(tiny_world, tmp_path):
    det_cfg, ckpt, vlm_cfg = det_and_vlm_configs(tiny_world, tmp_path)
    out = tmp_path / "ceiling.json"
    proc = subprocess.run([sys.executable, "tools/grounding_ceiling.py", str(det_cfg), str(ckpt),
                           "--vlm-config", str(vlm_cfg), "--thr", "0.0", "1.1", "--radius", "1000", "--out", str(out)],
                          cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {r["score_thr"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {0.0, 1.1} and rows[0.0]["questions"] == rows[1.1]["questions"] > 0
    # nothing scores above 1.1: every question answered "No such action ...", right where that is the reference
    init_default_scope("bevlm")
    ds_cfg = Config.fromfile(str(vlm_cfg)).test_dataloader.dataset.to_dict()
    ds_cfg.update(stream_skipped=False, queue_length=1)
    ds = DATASETS.build(ds_cfg)
    refs = [qa.answer for i in range(len(ds)) for qa in ds.get_data_info(i)["qa"] if qa.family == "collision_actions"]
    assert len(refs) == rows[1.1]["questions"] and rows[1.1]["grounded"] == 0
    assert rows[1.1]["exact_match"] == sum(a == "No such action will lead to a collision." for a in refs) / len(refs)
    assert rows[0.0]["grounded"] > 0 and 0.0 <= rows[0.0]["exact_match"] <= 1.0
    assert "| 1000 | 1.1 |" in proc.stdout

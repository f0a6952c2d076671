"""tools/planning_baselines.py end to end on a generated world: the references on the test split and
the ego-status MLP fitted on the training frames (run comparisons: tests/evaluation)."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, make_world


@pytest.fixture(scope="module")
def four_scene_world(tmp_path_factory):
    """4 scenes x 6 frames (3 train, 1 val): enough training scenes for the held-out choice."""
    return make_world(str(tmp_path_factory.mktemp("plan_world")), num_scenes=4, frames=6, image_size=(160, 90),
                      val_fraction=0.25)


def _run(args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "tools/planning_baselines.py", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def _opts(world):
    return ["--cfg-options", f"train_dataloader.dataset.ann_file={world}/infos/bevlm_infos_train.pkl",
            f"train_dataloader.dataset.data_root={world}/",
            f"test_dataloader.dataset.ann_file={world}/infos/bevlm_infos_val.pkl",
            f"test_dataloader.dataset.data_root={world}/", "test_dataloader.dataset.frame_stride=1"]


def test_references_and_a_run_compared_with_them(four_scene_world, tmp_path):
    out = tmp_path / "ref.json"
    proc = _run(["configs/bev_vlm.py", "--out", str(out), *_opts(four_scene_world)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ref = json.loads(out.read_text())
    assert set(ref["references"]) == {"constant_velocity", "ctra", "ego_mlp"}
    fit = ref["references"]["ego_mlp"]["fit"]
    assert fit["train_frames"] == 18 and fit["epochs"] >= 25 and fit["holdout_l2_avg_stp3"]["scenes"] == 1
    assert "fitted on 18 training frames" in proc.stdout
    assert ref["frames"] == 6 and ref["references"]["ego_mlp"]["metrics"]["L2_avg_stp3"] >= 0
    # bad input: one training scene cannot choose the fit on held-out scenes; the error says the fix
    one = _run(["configs/bev_vlm.py", "--modes", "ego_mlp", *_opts(four_scene_world)[:1],
                f"train_dataloader.dataset.ann_file={four_scene_world}/infos/bevlm_infos_val.pkl",
                f"train_dataloader.dataset.data_root={four_scene_world}/",
                *_opts(four_scene_world)[3:]])
    assert one.returncode != 0 and "2 or more scenes" in one.stderr

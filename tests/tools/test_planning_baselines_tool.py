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


def test_extra_driving_logs_join_the_ego_mlp_fit(four_scene_world, tmp_path):
    """``--extra-ann-files``: the frames of more info files join the ego_mlp fit; a file holding a val
    scene is refused, naming the file and the fix; without the option the config's EgoPriorFitHook's
    files are taken."""
    import importlib.util
    import pickle

    from mmengine.config import Config

    from bevlm.utils import load_plain_pickle

    data = load_plain_pickle(f"{four_scene_world}/infos/bevlm_infos_train.pkl")
    for f in data["data_list"]:  # the same logs as other scenes
        f["token"], f["scene_token"] = "x" + f["token"], "x" + f["scene_token"]
    extra = tmp_path / "extra_infos.pkl"
    extra.write_bytes(pickle.dumps(data))
    out = tmp_path / "ref.json"
    proc = _run(["configs/bev_vlm.py", "--modes", "ego_mlp", "--extra-ann-files", str(extra), "--out", str(out),
                 *_opts(four_scene_world)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fit = json.loads(out.read_text())["references"]["ego_mlp"]["fit"]
    assert fit["train_frames"] == 36 and fit["extra_ann_files"] == [str(extra)]
    assert fit["holdout_l2_avg_stp3"]["scenes"] == 2  # every 3rd of the 6 training scenes
    val = f"{four_scene_world}/infos/bevlm_infos_val.pkl"
    bad = _run(["configs/bev_vlm.py", "--modes", "ego_mlp", "--extra-ann-files", val, *_opts(four_scene_world)])
    assert bad.returncode != 0 and "bevlm_infos_val.pkl: 1 of its scenes are in the config's val / test set" in bad.stderr
    spec = importlib.util.spec_from_file_location("planning_baselines_tool", f"{REPO}/tools/planning_baselines.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    cfg = Config.fromfile(f"{REPO}/configs/ablations/bev_vlm_ego-prior-fit_more-scenes.py")
    assert tool._extra_ann_files(cfg, None) == ["data/mini_world_extra/infos/bevlm_infos_train.pkl",
                                                "data/mini_world_extra/infos/bevlm_infos_val.pkl"]
    assert tool._extra_ann_files(cfg, []) == [] and tool._extra_ann_files(Config.fromfile(f"{REPO}/configs/bev_vlm.py"), None) == []

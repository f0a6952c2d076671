"""The driving command (turn left / turn right / go straight) derived from the future waypoints."""
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from bevlm.registry import DATASETS
from bevlm.structures import COMMANDS, driving_command
from tests.conftest import REPO

init_default_scope("bevlm")


def _traj(lateral_end: float) -> np.ndarray:
    """Six waypoints 2 m apart ahead, drifting linearly to ``lateral_end`` metres (y left)."""
    return np.stack([2.0 * np.arange(1, 7), np.linspace(lateral_end / 6, lateral_end, 6)], 1)


def test_the_lateral_offset_of_the_last_known_waypoint_decides():
    assert COMMANDS == ("turn left", "turn right", "go straight")
    assert driving_command(_traj(5.0)) == 0       # 5 m to the left
    assert driving_command(_traj(-5.0)) == 1      # 5 m to the right
    assert driving_command(_traj(1.9)) == 2       # within +-2 m: straight
    assert driving_command(_traj(-2.0)) == 2      # the threshold itself is still straight
    assert driving_command(_traj(-2.01)) == 1
    # the last KNOWN waypoint: 5 m left at the end, but only the first three are known (1.0, 1.7, 2.5 m)
    traj = _traj(5.0)
    assert driving_command(traj, [1, 1, 1, 0, 0, 0]) == 0   # 2.5 m > 2
    assert driving_command(traj, [1, 1, 0, 0, 0, 0]) == 2   # 1.67 m
    assert driving_command(traj, np.zeros(6)) == 2          # nothing known (end of a recording)
    assert driving_command(_traj(3.0), threshold=4.0) == 2
    with pytest.raises(ValueError, match="6 waypoints, fut_mask 5"):
        driving_command(_traj(5.0), np.ones(5))


def test_packed_samples_carry_the_command_of_their_future(tiny_world):
    cfg = Config.fromfile(f"{REPO}/configs/bev_vlm_tiny.py")
    ds = DATASETS.build(dict(type="BEVDriveDataset", ann_file=f"{tiny_world}/infos/bevlm_infos_train.pkl",
                             data_root=f"{tiny_world}/", pipeline=cfg.pipeline, queue_length=1, qa_mode="frame"))
    for i in range(len(ds)):
        sample = ds[i]["data_samples"]
        frame = ds.frames[ds.data_list[i]["frame"]]
        assert sample.ego_command.dtype == torch.long and sample.ego_command.dim() == 0
        assert int(sample.ego_command) == driving_command(frame["ego_fut_traj"], frame["ego_fut_mask"])
        # the same waypoints the planner is scored on
        np.testing.assert_allclose(sample.gt_traj.numpy(), np.asarray(frame["ego_fut_traj"], np.float32))

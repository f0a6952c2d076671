"""The visualiser writes a PNG with the expected panels, on the mini world and on the DriveLM sample."""
import os

import matplotlib.pyplot as plt
import pytest
from mmengine.config import Config

from bevlm.datasets.converters import create_drivelm_only_infos
from bevlm.visualization import PANELS, visualize_frames
from tests.conftest import REPO
from tests.datasets.conftest import SAMPLE_IMAGES, SAMPLE_JSON


@pytest.fixture()
def spy_titles(monkeypatch):
    titles = []
    orig = plt.Figure.savefig

    def savefig(fig, *a, **kw):
        titles.extend(ax.get_title() for ax in fig.axes)
        return orig(fig, *a, **kw)

    monkeypatch.setattr(plt.Figure, "savefig", savefig)
    return titles


def _check_png(path):
    assert os.path.isfile(path) and open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert plt.imread(path).shape[0] > 500


def test_mini_world_frame_with_model(tiny_world, tmp_path, spy_titles):
    cfg = Config.fromfile(os.path.join(REPO, "configs", "bev_vlm_tiny.py"))
    # an untrained tiny model is enough to exercise the prediction panels
    import torch
    from mmengine.registry import init_default_scope

    from bevlm.registry import MODELS
    init_default_scope("bevlm")
    torch.manual_seed(0)
    ckpt = tmp_path / "m.pth"
    torch.save({"state_dict": MODELS.build(cfg.model).state_dict()}, ckpt)
    paths = visualize_frames(cfg, str(tmp_path / "vis"), [0],
                             checkpoint=str(ckpt), ann_file=f"{tiny_world}/infos/bevlm_infos_val.pkl",
                             data_root=f"{tiny_world}/")
    _check_png(paths[0])
    assert list(spy_titles) == list(PANELS)


def test_drivelm_sample_frame_nominal_rig(tmp_path, spy_titles):
    ann = create_drivelm_only_infos(SAMPLE_JSON, SAMPLE_IMAGES, str(tmp_path / "s.pkl"))
    cfg = Config.fromfile(os.path.join(REPO, "configs", "bev_vlm.py"))
    paths = visualize_frames(cfg, str(tmp_path / "vis"), [0, 8], ann_file=ann)
    for p in paths:
        _check_png(p)
    assert spy_titles[:len(PANELS)] == list(PANELS)

"""tools/test.py's test-set rewrites (--planning-only, --submission) on configs, without a model."""
import importlib.util
import os
from types import SimpleNamespace

import pytest
from mmengine.config import Config

from tests.conftest import REPO


def _tool():
    spec = importlib.util.spec_from_file_location("test_tool", os.path.join(REPO, "tools/test.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _args(**kw):
    return SimpleNamespace(**{"config": "cfg.py", "submission": None, "variant": None, "quantized": False, **kw})


def test_planning_only_rewrites_the_test_set_to_every_frame():
    tool = _tool()
    cfg = Config(dict(test_dataloader=dict(dataset=dict(type="BEVDriveDataset", qa_mode="test_format", frame_stride=3,
                                                        max_frames=2, stream_skipped=True, require_qa=True)),
                      test_evaluator=[dict(type="DriveLMMetric")]))
    tool._set_planning_only(cfg, _args())
    ds = cfg.test_dataloader.dataset
    assert (ds.qa_mode, ds.require_qa, ds.frame_stride, ds.stream_skipped, ds.max_frames) == \
        ("none", False, 1, False, None)
    assert cfg.test_evaluator == [dict(type="PlanningMetric")]


@pytest.mark.parametrize("option", ["--planning-only", "--submission"])
def test_a_concatenated_test_set_is_refused_naming_the_option(option):
    tool = _tool()
    cfg = Config(dict(test_dataloader=dict(dataset=dict(type="ConcatDataset", datasets=[]))))
    with pytest.raises(SystemExit, match=f"cfg.py: {option} needs test_dataloader.dataset of type BEVDriveDataset.*"
                                         "Fix: test with a single-dataset config"):
        tool._single_test_dataset(cfg, _args(), option)


def test_planning_only_refuses_answer_options():
    tool = _tool()
    cfg = Config(dict(test_dataloader=dict(dataset=dict(type="BEVDriveDataset"))))
    with pytest.raises(SystemExit, match="--planning-only scores the plans alone"):
        tool._set_planning_only(cfg, _args(variant="lossless"))

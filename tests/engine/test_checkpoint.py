"""Checkpoint loading policy: own training checkpoints load (resume works), foreign code does not."""
import os
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

from bevlm.engine.checkpoint import UntrustedCheckpointError, load_checkpoint_file, pickle_globals


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_training_checkpoint_loads_through_mmengine(tmp_path):
    buf = HistoryBuffer()
    buf.update(np.float64(1.5))
    ckpt = {"state_dict": {"w": torch.ones(2)}, "message_hub": {"log_scalars": {"loss": buf},
                                                               "runtime_info": {"iter": np.int64(3)}},
            "meta": {"seed": np.float32(0.5)}}
    path = str(tmp_path / "ok.pth")
    torch.save(ckpt, path)
    with pytest.raises(pickle.UnpicklingError):  # what torch >= 2.6 does by default
        torch.load(path)
    loaded = CheckpointLoader.load_checkpoint(path, "cpu")  # the path mmengine's resume takes
    assert torch.equal(loaded["state_dict"]["w"], torch.ones(2))
    assert loaded["message_hub"]["runtime_info"]["iter"] == 3


def test_untrusted_globals_are_refused_without_running_them(tmp_path):
    path = str(tmp_path / "evil.pth")
    torch.save({"state_dict": {}, "x": _Evil()}, path)
    assert any("getcwd" in g for g in pickle_globals(path))
    with pytest.raises(UntrustedCheckpointError, match=r"evil\.pth.*getcwd.*Fix"):
        load_checkpoint_file(path)

"""tools/train_draft_heads.py on the tiny model: the heads file and its report are written, and the file
loads into a batched decoder of the same LLM."""
import json
import os

import pytest
import torch

from tests.conftest import REPO
from tools.train_draft_heads import evenly_spaced, main


def test_evenly_spaced():
    assert evenly_spaced(10, 3) == [0, 4, 9] and evenly_spaced(3, 5) == [0, 1, 2] and evenly_spaced(7, 1) == [0]


def test_tool_writes_heads_that_load(tiny_world, tmp_path, capsys):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from bevlm.inference.speculative import SelfSpeculativeDecoder
    from bevlm.registry import MODELS

    init_default_scope("bevlm")
    cfg = Config.fromfile(f"{REPO}/configs/bev_vlm_tiny.py")
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    ckpt = str(tmp_path / "tiny.pth")
    torch.save({"state_dict": model.state_dict()}, ckpt)
    out = str(tmp_path / "heads" / "tiny.safetensors")
    main([f"{REPO}/configs/bev_vlm_tiny.py", ckpt, "--frames", "3", "--heads", "2", "--epochs", "1",
          "--val-share", "0.34", "--threads", "1", "--out", out, "--cfg-options",
          f"train_dataloader.dataset.ann_file={tiny_world}/infos/bevlm_infos_train.pkl",
          f"train_dataloader.dataset.data_root={tiny_world}/"])
    report = json.load(open(os.path.join(tmp_path, "heads", "tiny.json")))
    assert report["frames"] == 3 and report["val_frames"] == 1 and report["num_heads"] == 2
    assert "top-1 agreement" in capsys.readouterr().out
    dec = SelfSpeculativeDecoder(model.llm, [], use_layer_skip=False, batched=True, draft_heads=out)
    assert dec.draft_heads.num_heads == 2 and dec.draft_heads.info["checkpoint"] == ckpt
    with pytest.raises(SystemExit, match="--frames >= 2"):
        main([f"{REPO}/configs/bev_vlm_tiny.py", ckpt, "--frames", "1"])

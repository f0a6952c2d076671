"""The real-scale nuScenes configs (configs/nuscenes/) are valid and their model trains a step.

No real weights are downloaded or needed: the test saves a randomly initialised resnet50 as the
local backbone weights file and a tiny random Qwen2 as the local Hugging Face LLM directory, the two
files the real recipe reads (docs/real_data.md), and runs one bf16-autocast training step of the
real-scale model on the tiny world (images at 160x90 instead of 800x450, to stay fast on a CPU).
"""
import os

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from bevlm.engine.config_check import check_config
from bevlm.registry import DATASETS, MODELS
from tests.conftest import REPO

init_default_scope("bevlm")
REAL = ["configs/nuscenes/bev_det_pretrain_r50.py", "configs/nuscenes/bev_vlm_r50_qwen2.5-0.5b.py"]


@pytest.mark.parametrize("path", REAL)
def test_real_scale_configs_pass_the_config_check(path):
    cfg = Config.fromfile(os.path.join(REPO, path))
    check_config(cfg, path)
    assert cfg.optim_wrapper.type == "AmpOptimWrapper" and cfg.optim_wrapper.dtype == "bfloat16"
    assert cfg.model.img_backbone.gradient_checkpointing and cfg.model.bev_encoder.gradient_checkpointing
    assert tuple(cfg.model.bev_encoder.pc_range[:2]) == (-51.2, -51.2) and cfg.model.bev_encoder.bev_h == 50
    assert cfg.train_dataloader.num_workers >= 2


@pytest.mark.slow
def test_real_scale_model_from_local_files_trains_a_bf16_step(tiny_world, tmp_path):
    import timm
    from safetensors.torch import save_file

    from bevlm.testing import TINY_ARCH_CONFIGS, build_tiny_causal_lm

    cfg = Config.fromfile(os.path.join(REPO, "configs/nuscenes/bev_vlm_r50_qwen2.5-0.5b.py"))
    # the two local files of the real recipe, with random weights
    torch.manual_seed(0)
    r50 = timm.create_model("resnet50", pretrained=False)
    weights = str(tmp_path / "resnet50.safetensors")
    save_file({k: v.contiguous() for k, v in r50.state_dict().items()}, weights)
    lm, tok = build_tiny_causal_lm(TINY_ARCH_CONFIGS["qwen2"])
    llm_dir = str(tmp_path / "qwen2")
    lm.save_pretrained(llm_dir)
    tok.save_pretrained(llm_dir)
    mcfg = cfg.model.to_dict()
    mcfg["img_backbone"]["pretrained"] = weights
    mcfg["llm"]["pretrained"] = llm_dir
    model = MODELS.build(mcfg).train()
    # the backbone holds the file's weights
    loaded = dict(model.img_backbone.model.named_parameters())
    assert torch.equal(loaded["conv1.weight"], r50.conv1.weight)
    assert next(model.llm.parameters()).dtype == torch.bfloat16  # the frozen base in bf16
    pipeline = [dict(type="LoadMultiViewImages"), dict(type="ResizeMultiViewImages", size=(160, 90)),
                dict(type="PackDriveInputs")]
    ds = DATASETS.build(dict(type="BEVDriveDataset", ann_file=f"{tiny_world}/infos/bevlm_infos_train.pkl",
                             data_root=f"{tiny_world}/", pipeline=pipeline, queue_length=2, qa_per_sample=2))
    data = model.data_preprocessor(pseudo_collate([ds[0]]), True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(**data, mode="loss")
    loss = sum(v for k, v in losses.items() if k.startswith("loss"))
    assert torch.isfinite(loss)
    loss.backward()
    lora = [p for n, p in model.llm.named_parameters() if "lora_" in n and p.requires_grad]
    assert lora and all(p.dtype == torch.float32 for p in lora)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.img_backbone.model.conv1.weight.grad is not None  # checkpointed backbone gets gradients

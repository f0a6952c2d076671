"""Teacher-forced fidelity of variants to the float model, on the tiny config."""
import os

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from bevlm.inference.fidelity import compare_logits, run_fidelity
from bevlm.registry import MODELS
from tests.conftest import REPO


def test_compare_logits_by_hand():
    ref = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    new = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    r = compare_logits(ref, new, torch.tensor([0, 2]))
    assert r["top1_agreement"] == 0.5 and r["ref_accuracy"] == 1.0 and r["tokens"] == 2
    p, q = ref.log_softmax(-1), new.log_softmax(-1)
    assert abs(r["kl"] - float((p.exp() * (p - q)).sum() / 2)) < 1e-6
    assert compare_logits(ref, ref, torch.tensor([0, 1]))["kl"] == 0.0


def test_lossless_switches_are_exact_and_int4_is_close(tiny_world):
    init_default_scope("bevlm")
    cfg = Config.fromfile(os.path.join(REPO, "configs", "bev_vlm_tiny.py"))
    for key, split in (("train_dataloader", "train"), ("test_dataloader", "val")):
        cfg[key]["dataset"]["ann_file"] = f"{tiny_world}/infos/bevlm_infos_{split}.pkl"
        cfg[key]["dataset"]["data_root"] = f"{tiny_world}/"
    torch.manual_seed(0)
    base = MODELS.build(cfg.model).eval()
    res = run_fidelity(cfg, base, {"prompt_cache": dict(share_prompt_cache=True),
                                   "int4": dict(quant=dict(method="rtn", group_size=32, kernel="dequant"))},
                       frame_stride=4, max_questions=4, log=lambda *_: None)
    assert res["baseline"]["top1_agreement"] == 1.0 and res["baseline"]["kl"] == 0.0
    assert res["prompt_cache"]["top1_agreement"] == 1.0 and res["prompt_cache"]["kl"] < 1e-6
    assert 0.0 < res["int4"]["kl"] and 0.5 < res["int4"]["top1_agreement"] <= 1.0
    assert res["int4"]["tokens"] == res["baseline"]["tokens"] > 0
    with pytest.raises(ValueError, match="pruning"):
        run_fidelity(cfg, base, {"p": dict(pruning=dict(bev_keep_ratio=0.5))}, log=lambda *_: None)


def test_variant_inputs_read_every_member_of_a_union(tiny_world):
    from bevlm.inference.variants import variant_inputs

    init_default_scope("bevlm")
    cfg = Config.fromfile(os.path.join(REPO, "configs", "bev_vlm_tiny.py"))
    member = dict(cfg.train_dataloader.dataset.to_dict(), ann_file=f"{tiny_world}/infos/bevlm_infos_train.pkl",
                  data_root=f"{tiny_world}/")
    cfg.train_dataloader.dataset = dict(type="ConcatDataset", ignore_keys=["data_root", "num_qa_frames", "domain"],
                                        datasets=[dict(member, domain="day"), dict(member, domain="night")])
    torch.manual_seed(0)
    base = MODELS.build(cfg.model).eval()
    spec = dict(quant=dict(method="gptq"), speculative=dict(use_layer_skip=False, datastore=dict()))
    calib, train_qa = variant_inputs(base, cfg, [spec], calib_frames=4)
    assert len(calib) == 4  # 2 frames of each domain
    single = Config.fromfile(os.path.join(REPO, "configs", "bev_vlm_tiny.py"))
    single.train_dataloader.dataset.update(ann_file=member["ann_file"], data_root=member["data_root"])
    _, one = variant_inputs(base, single, [spec])
    assert len(train_qa) == 2 * len(one) > 0

"""Teacher-forced fidelity of variants to the float model, on the tiny config."""
import os

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from bevlm.inference.fidelity import compare_logits, markdown_table, run_fidelity
from bevlm.registry import MODELS
from tests.conftest import REPO


def _tiny_cfg(tiny_world) -> Config:
    """The tiny config reading the generated tiny world (training and test splits)."""
    init_default_scope("bevlm")
    cfg = Config.fromfile(os.path.join(REPO, "configs", "bev_vlm_tiny.py"))
    for key, split in (("train_dataloader", "train"), ("test_dataloader", "val")):
        cfg[key]["dataset"]["ann_file"] = f"{tiny_world}/infos/bevlm_infos_{split}.pkl"
        cfg[key]["dataset"]["data_root"] = f"{tiny_world}/"
    return cfg


def test_compare_logits_by_hand():
    ref = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    new = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    r = compare_logits(ref, new, torch.tensor([0, 2]))
    assert r["top1_agreement"] == 0.5 and r["ref_accuracy"] == 1.0 and r["tokens"] == 2
    p, q = ref.log_softmax(-1), new.log_softmax(-1)
    assert abs(r["kl"] - float((p.exp() * (p - q)).sum() / 2)) < 1e-6
    assert compare_logits(ref, ref, torch.tensor([0, 1]))["kl"] == 0.0


def test_compare_logits_by_the_float_models_margin():
    """Margins of the reference rows: 2.0, 0.5, 3.0, 0.2 nats (logit gaps; softmax keeps them):
    rows 1 and 3 are unsure at 1 nat. The variant changes the top-1 token of rows 1 and 2."""
    ref = torch.tensor([[2.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.2]])
    new = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [0.0, 0.0, 0.2]])
    r = compare_logits(ref, new, torch.tensor([0, 0, 1, 2]))
    assert r["low_margin_share"] == 0.5 and r["top1_agreement"] == 0.5
    assert r["top1_agreement_low_margin"] == 0.5 and r["top1_agreement_high_margin"] == 0.5
    assert r["flips_at_low_margin"] == 0.5
    r = compare_logits(ref, new, torch.tensor([0, 0, 1, 2]), margin_nats=0.4)  # only row 3 unsure
    assert r["low_margin_share"] == 0.25 and r["top1_agreement_low_margin"] == 1.0 and r["flips_at_low_margin"] == 0.0
    same = compare_logits(ref, ref, torch.tensor([0, 0, 1, 2]))
    assert same["top1_agreement_low_margin"] == 1.0 and same["flips_at_low_margin"] is None  # nothing changed
    table = markdown_table({"baseline": same, "v": r})
    assert "| baseline | 1.0000 | 0.0000 | 1.0000 | 4 | 0.5000 | 1.0000 / 1.0000 | - |" in table


def test_lossless_switches_are_exact_and_int4_is_close(tiny_world):
    cfg = _tiny_cfg(tiny_world)
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


def test_calibrated_multiple_choice_scores_against_the_mean_training_prefix(tiny_world):
    """apply_variant with multiple_choice='calibrated' sets the content-free frame to the mean prefix of
    training frames spread over the split; predict then picks argmax(frame - prior) per MC question, and
    without the prior it stops with the fix named."""
    from mmengine.dataset import pseudo_collate

    from bevlm.inference.variants import apply_variant, mc_prior_prefix, prior_inputs
    from bevlm.models.qa import OptionPrior, choose_by_likelihood, is_multiple_choice
    from bevlm.registry import DATASETS

    cfg = _tiny_cfg(tiny_world)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    spec = dict(multiple_choice="calibrated")
    assert prior_inputs(model, cfg, [dict()]) is None  # the tiny config scores by decoding: nothing to build
    frames = prior_inputs(model, cfg, [spec], frames=3)
    assert len(frames) == 3 and len({f.prefix.shape for f in frames}) == 1
    assert not torch.equal(frames[0].prefix, frames[-1].prefix)  # spread over the split, not one frame thrice
    with pytest.raises(ValueError, match="prior=prior_inputs"):
        apply_variant(model, spec, log=lambda *_: None)
    model.set_test_cfg(dict(multiple_choice="generate"))
    apply_variant(model, spec, log=lambda *_: None, prior=frames)
    mean = torch.stack([f.prefix[0] for f in frames]).mean(0, keepdim=True)
    assert torch.allclose(model.mc_prior.prefix, mean) and torch.allclose(mc_prior_prefix(frames), mean)

    ds = DATASETS.build(dict(cfg.test_dataloader.dataset.to_dict(), qa_select="test", queue_length=1,
                             qa_mode="frame", frame_stride=1, stream_skipped=False))
    data = model.data_preprocessor(pseudo_collate([ds[0]]), False)
    sample = data["data_samples"][0]
    mc = [qa for qa in sample.qa if is_multiple_choice(qa)]
    assert mc
    model.reset_test_state()
    out = model(**data, mode="predict")[0]
    model.reset_test_state()
    vis, _ = model.visual_tokens(data["inputs"]["imgs"], data["data_samples"])
    cache = model.llm.prefill(model.build_prefix(vis, data["data_samples"]))
    want, _ = choose_by_likelihood(model.llm, cache, mc, model.qa_policy, prior=OptionPrior(model.llm, mean))
    assert want == {qa.index: out.pred_answers[qa.index] for qa in mc}
    # a variant that does not calibrate clears the prior; calibrated without one names the fix
    apply_variant(model, dict(multiple_choice="likelihood"), log=lambda *_: None)
    assert model.mc_prior is None
    model.set_test_cfg(dict(multiple_choice="calibrated"))
    model.reset_test_state()
    with pytest.raises(RuntimeError, match="set_mc_prior"):
        model(**data, mode="predict")
    with pytest.raises(ValueError, match="differ in shape"):
        mc_prior_prefix([frames[0], frames[1]._replace(prefix=frames[1].prefix[:, 1:])])

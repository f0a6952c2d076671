"""Gradient checkpointing of the image backbone, the BEV encoder and the LLM (config switches
``img_backbone.gradient_checkpointing``, ``bev_encoder.gradient_checkpointing``,
``llm.gradient_checkpointing``).

A training step of the tiny BEVVLM (dropout off) with one switch on gives the loss and the gradient
of every trainable parameter of the step with it off, within ``RTOL`` / ``ATOL`` (measured: equal
to the last bit on this CPU), and the checkpointed modules really run twice (forward + recompute).
BatchNorm: the backbone recomputes with its running statistics frozen, so they too equal the plain
step's (a bare ``torch.utils.checkpoint`` would update them a second time, shown below).
"""
import copy
from contextlib import nullcontext

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from torch import nn
from torch.utils.checkpoint import checkpoint

from bevlm.models.backbones.timm_backbone import TimmBackbone, no_running_stat_updates
from bevlm.models.llm import HFCausalLM
from bevlm.registry import DATASETS, MODELS
from bevlm.testing import TINY_LLAMA_CONFIG
from tests.conftest import REPO

init_default_scope("bevlm")
torch.set_num_threads(1)

RTOL, ATOL = 1e-5, 1e-7  # gradients and losses; measured max difference: 0 (bit-identical)


def _cfg():
    return Config.fromfile(f"{REPO}/configs/bev_vlm_tiny.py")


@pytest.fixture(scope="module")
def batch(tiny_world):
    cfg = _cfg()
    ds = DATASETS.build(dict(type="BEVDriveDataset", ann_file=f"{tiny_world}/infos/bevlm_infos_train.pkl",
                             data_root=f"{tiny_world}/", pipeline=cfg.pipeline, queue_length=2, qa_per_sample=3))
    return pseudo_collate([ds[0], ds[5]])


def _model(switch: str | None) -> nn.Module:
    mcfg = _cfg().model.to_dict()
    mcfg["bev_encoder"]["num_layers"] = 2
    if switch is not None:
        mcfg[switch]["gradient_checkpointing"] = True
    torch.manual_seed(0)
    return MODELS.build(mcfg).train()


def _counted(module: nn.Module) -> list:
    """A list that grows by one at every call of ``module`` (a recompute calls it again; a pre-hook,
    as the recompute stops once the tensors backward needs are back)."""
    calls = []
    module.register_forward_pre_hook(lambda *args: calls.append(1))
    return calls


def _probe(model: nn.Module, switch: str) -> nn.Module:
    """The first module of the checkpointed part of ``switch``."""
    return {"img_backbone": lambda: model.img_backbone.model.layer1,
            "bev_encoder": lambda: model.bev_encoder.layers[0],
            "llm": lambda: model.llm.lm.model.layers[0].input_layernorm}[switch]()


def _train_step(model: nn.Module, batch) -> tuple[dict, dict, dict]:
    data = model.data_preprocessor(copy.deepcopy(batch), True)
    losses = model(**data, mode="loss")
    sum(v for k, v in losses.items() if "loss" in k).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    norm_stats = {n: b.clone() for n, b in model.named_buffers() if "running_" in n or "num_batches_tracked" in n}
    return {k: v.detach() for k, v in losses.items()}, grads, norm_stats


@pytest.fixture(scope="module")
def reference(batch):
    model = _model(None)
    calls = {s: _counted(_probe(model, s)) for s in ("img_backbone", "bev_encoder", "llm")}
    return _train_step(model, batch), {s: len(c) for s, c in calls.items()}


@pytest.mark.parametrize("switch", ["img_backbone", "bev_encoder", "llm"])
def test_checkpointing_switch_gives_the_plain_training_step(batch, reference, switch):
    (ref_losses, ref_grads, ref_stats), ref_calls = reference
    model = _model(switch)
    calls = _counted(_probe(model, switch))
    losses, grads, stats = _train_step(model, batch)
    # the history frame runs under no_grad (not checkpointed), the current frame's part is recomputed once
    assert len(calls) == ref_calls[switch] + 1
    assert set(losses) == set(ref_losses)
    for key in ref_losses:
        torch.testing.assert_close(losses[key], ref_losses[key], rtol=RTOL, atol=ATOL)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(grads) == set(ref_grads) and len(grads) > 0.9 * len(trainable)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=RTOL, atol=ATOL, msg=lambda m: f"{name}: {m}")
    assert any(n.startswith(switch) and g.abs().sum() > 0 for n, g in grads.items())
    # BatchNorm running statistics: updated once per step, as without checkpointing
    assert stats.keys() == ref_stats.keys() and any("img_backbone" in n for n in stats)
    for name, value in ref_stats.items():
        torch.testing.assert_close(stats[name], value, rtol=0, atol=0, msg=lambda m: f"{name}: {m}")


def test_checkpointing_is_off_in_eval_and_under_no_grad():
    torch.manual_seed(0)
    enc_cfg = _cfg().model.bev_encoder.to_dict()
    enc_cfg.update(gradient_checkpointing=True)
    encoder = MODELS.build(enc_cfg)
    backbone = TimmBackbone("resnet18", out_indices=(2, 3), gradient_checkpointing=True)
    enc_calls, bb_calls = _counted(encoder.layers[0]), _counted(backbone.model.layer1)
    imgs = torch.randn(6, 3, 36, 64)
    ego2img = torch.eye(4).expand(1, 6, 4, 4).clone()
    for mode, grad in ((False, True), (True, False)):
        encoder.train(mode), backbone.train(mode)
        with torch.set_grad_enabled(grad):
            feats = backbone(imgs)
            mlvl = [torch.randn(1, 6, 32, f.shape[2], f.shape[3], requires_grad=grad) for f in feats]
            out = encoder(mlvl, ego2img, (36, 64))
            if grad:
                out.sum().backward()
                sum(f.sum() for f in feats).backward()
    assert len(enc_calls) == 2 and len(bb_calls) == 2  # once per forward: no recompute


def test_backbone_recompute_does_not_update_batchnorm_statistics_twice():
    """What the recompute context prevents: a bare checkpoint of a stage in training mode applies the
    running-statistics momentum update a second time in backward."""
    torch.manual_seed(0)
    stage = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).train()
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    bn = stage[1]

    def stats():
        return bn.running_mean.clone(), int(bn.num_batches_tracked)

    start = copy.deepcopy(stage.state_dict())
    stage(x).sum().backward()
    plain = stats()
    stage.load_state_dict(start)
    checkpoint(stage, x, use_reentrant=False).sum().backward()
    bare = stats()
    stage.load_state_dict(start)
    checkpoint(stage, x, use_reentrant=False,
               context_fn=lambda: (nullcontext(), no_running_stat_updates(stage))).sum().backward()
    guarded = stats()
    assert plain[1] == 1 and bare[1] == 2 and not torch.equal(bare[0], plain[0])
    assert guarded[1] == 1 and torch.equal(guarded[0], plain[0])
    assert bn.track_running_stats  # restored after the recompute


def test_backbone_checkpointing_refuses_a_feature_wrapper_it_cannot_split():
    with pytest.raises(ValueError, match="FeatureListNet"):
        TimmBackbone("mobilenetv3_small_050", out_indices=(1, 2), gradient_checkpointing=True)


def test_llm_checkpointing_with_lora_on_a_frozen_base_and_inputs_without_grad():
    """LoRA on a frozen base and prefix embeddings that need no gradient (a frozen or blind vision
    side): non-reentrant checkpointing still reaches every adapter, with the plain step's gradients."""
    blocks = [[("Predict the behavior of the ego vehicle.", "The ego vehicle is going straight."),
               ("Yes?", "No.")]]
    prefix = torch.randn(1, 4, TINY_LLAMA_CONFIG["hidden_size"], generator=torch.Generator().manual_seed(1))
    results = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        llm = HFCausalLM(tiny_config=TINY_LLAMA_CONFIG, lora=dict(r=4, alpha=8, dropout=0.0),
                         gradient_checkpointing=ckpt).train()
        for name, p in llm.named_parameters():  # lora_B starts at 0, which would leave lora_A without gradient
            if "lora_B" in name:
                p.data.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
        layers = llm.lm.model.layers
        assert all(layer.gradient_checkpointing == ckpt for layer in layers)
        if ckpt:
            assert layers[0]._gradient_checkpointing_func.keywords["use_reentrant"] is False
        calls = _counted(layers[1].input_layernorm)
        loss = llm.forward_train(llm.build_batch(blocks, num_prefix=4), prefix)["loss_lm"]
        loss.backward()
        assert len(calls) == 1 + ckpt
        grads = {n: p.grad for n, p in llm.named_parameters() if p.requires_grad}
        assert grads and all("lora_" in n for n in grads) and all(g is not None and g.abs().sum() > 0
                                                                  for g in grads.values())
        results.append((loss.detach(), grads))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=RTOL, atol=ATOL)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, rtol=RTOL, atol=ATOL)

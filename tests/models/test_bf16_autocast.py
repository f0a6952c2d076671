"""A bf16 mixed-precision training step (``torch.autocast('cpu', dtype=torch.bfloat16)``, fp32
weights) stays close to the fp32 step: the tiny BEVVLM and the tiny LLM of every architecture.

Bounds, set with margin over what was measured on three seeds (batches) each:

* BEVVLM: total loss within ``BEV_LOSS_RTOL`` (measured <= 0.0008), every loss term within
  ``BEV_TERM_RTOL`` (heatmap <= 0.0034); gradient cosine over all trainable parameters >=
  ``BEV_COS_ALL`` (measured >= 0.9989) and per module >= ``BEV_COS_MODULE`` (backbone >= 0.9897,
  BEV encoder >= 0.9907, aux head >= 0.9946, the others >= 0.996).
* LLMs with LoRA (``lora_B`` randomised so that every adapter gets a gradient): loss within
  ``LLM_LOSS_RTOL`` (measured <= 0.0023), LoRA gradient cosine >= ``LLM_COS`` (measured >= 0.9948,
  Qwen2; Phi-3 >= 0.9962, Llama >= 0.9978, Gemma-2 >= 0.9983, Phi-2 / GPT-NeoX >= 0.9997).

Every gradient is finite. mmengine's ``AmpOptimWrapper`` (0.10.7) cannot carry this on a CPU: its
constructor asserts that CUDA (or an NPU / MLU / MUSA device) is available, whatever ``dtype``
(and it builds a ``torch.cuda.amp.GradScaler``). CPU bf16 training therefore means
``torch.autocast`` (or ``mmengine.runner.amp.autocast(device_type='cpu')``, which wraps it) around
the forward, which is what is tested here; the wrapper is only checked to refuse the CPU.
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from bevlm.models.llm import HFCausalLM
from bevlm.registry import DATASETS, MODELS
from bevlm.testing import TINY_ARCH_CONFIGS
from tests.conftest import REPO

init_default_scope("bevlm")
torch.set_num_threads(1)

BEV_LOSS_RTOL, BEV_TERM_RTOL = 0.01, 0.02
BEV_COS_ALL, BEV_COS_MODULE = 0.99, 0.97
LLM_LOSS_RTOL, LLM_COS = 0.01, 0.98
MODULES = ("img_backbone", "img_neck", "bev_encoder", "aux_head", "projector", "llm", "ego_embed", "traj_head")
BLOCKS = [[("What is the moving status of object <c1,CAM_FRONT,712.5,510.0>?", "Going ahead."),
           ("Predict the behavior of the ego vehicle.", "The ego vehicle is going straight.")],
          [("Yes?", "No.")]]


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def _flat(grads: dict, names) -> torch.Tensor:
    return torch.cat([grads[n].flatten() for n in names])


def _bevvlm_step(model, batch, bf16: bool):
    model.zero_grad(set_to_none=True)
    data = model.data_preprocessor(copy.deepcopy(batch), True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        losses = model(**data, mode="loss")
    total = sum(v for k, v in losses.items() if "loss" in k)
    total.backward()
    grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: float(v.detach()) for k, v in losses.items() if "loss" in k}, float(total.detach()), grads


def test_bevvlm_bf16_autocast_step_is_close_to_fp32(tiny_world):
    cfg = Config.fromfile(f"{REPO}/configs/bev_vlm_tiny.py")
    ds = DATASETS.build(dict(type="BEVDriveDataset", ann_file=f"{tiny_world}/infos/bevlm_infos_train.pkl",
                             data_root=f"{tiny_world}/", pipeline=cfg.pipeline, queue_length=2, qa_per_sample=3))
    batch = pseudo_collate([ds[0], ds[5]])
    torch.manual_seed(0)
    model = MODELS.build(cfg.model.to_dict()).train()
    start = copy.deepcopy(model.state_dict())
    terms32, total32, grads32 = _bevvlm_step(model, batch, bf16=False)
    model.load_state_dict(start)  # the same BatchNorm statistics for the second step
    terms16, total16, grads16 = _bevvlm_step(model, batch, bf16=True)

    assert total16 != total32  # the step really ran in bf16
    assert abs(total16 - total32) <= BEV_LOSS_RTOL * abs(total32)
    assert terms16.keys() == terms32.keys() == {"loss_lm", "loss_traj", "loss_heatmap", "loss_occ"}
    for key, value in terms32.items():
        assert abs(terms16[key] - value) <= BEV_TERM_RTOL * abs(value), (key, terms16[key], value)
    assert grads16.keys() == grads32.keys()
    assert all(torch.isfinite(g).all() for g in grads16.values())
    names = sorted(grads32)
    assert _cos(_flat(grads16, names), _flat(grads32, names)) >= BEV_COS_ALL
    for module in MODULES:
        part = [n for n in names if n.startswith(module + ".")]
        assert part, module
        assert _cos(_flat(grads16, part), _flat(grads32, part)) >= BEV_COS_MODULE, module


@pytest.mark.parametrize("arch", sorted(TINY_ARCH_CONFIGS))
def test_llm_bf16_autocast_step_is_close_to_fp32(arch):
    torch.manual_seed(0)
    llm = HFCausalLM(tiny_config=dict(TINY_ARCH_CONFIGS[arch], num_hidden_layers=4, initializer_range=0.2),
                     lora=dict(r=4, alpha=8, dropout=0.0)).train()
    g = torch.Generator().manual_seed(0)
    for name, p in llm.named_parameters():
        if "lora_B" in name:  # lora_B starts at 0, which leaves lora_A without a gradient
            p.data.normal_(0, 0.05, generator=g)
    prefix = torch.randn(2, 5, llm.hidden_size, generator=g)
    batch = llm.build_batch(BLOCKS, num_prefix=5)
    results = []
    for bf16 in (False, True):
        llm.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = llm.forward_train(batch, prefix)["loss_lm"]
        loss.backward()
        grads = [p.grad for p in llm.parameters() if p.requires_grad]
        assert grads and all(gr is not None and torch.isfinite(gr).all() for gr in grads)
        results.append((float(loss.detach()), torch.cat([gr.flatten() for gr in grads])))
    (loss32, grad32), (loss16, grad16) = results
    assert loss16 != loss32  # the LLM really ran in bf16
    assert abs(loss16 - loss32) <= LLM_LOSS_RTOL * loss32
    assert _cos(grad16, grad32) >= LLM_COS


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is that of a machine without CUDA")
def test_mmengine_amp_optim_wrapper_needs_cuda():
    from mmengine.optim import AmpOptimWrapper

    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(AssertionError, match="only available training on gpu"):
        AmpOptimWrapper(dtype="bfloat16", optimizer=torch.optim.SGD(params, lr=0.1))

"""LoRA / multi-LoRA adapters, trainable sets, and peft save/load."""
import json
import os

import pytest
import torch

from bevlm.models.llm import HFCausalLM
from bevlm.testing import TINY_LLAMA_CONFIG

torch.set_num_threads(1)

P = 4
LORA = dict(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
BLOCKS = [[("What is the moving status of object <c1,CAM_FRONT,712.5,510.0>?", "Going ahead."),
           ("Predict the behavior of the ego vehicle.", "The ego vehicle is going straight.")]]


def _build(**kwargs) -> HFCausalLM:
    torch.manual_seed(0)
    return HFCausalLM(tiny_config=TINY_LLAMA_CONFIG, **kwargs).eval()


def _logits(llm: HFCausalLM) -> torch.Tensor:
    torch.manual_seed(5)
    prefix = torch.randn(1, P, llm.hidden_size)
    with torch.no_grad():
        return llm.answer_logits(llm.build_batch(BLOCKS, num_prefix=P), prefix)[0]


def _randomise(llm: HFCausalLM, adapter: str, seed: int) -> None:
    """Give an adapter non-zero weights (peft initialises lora_B to zero)."""
    gen = torch.Generator().manual_seed(seed)
    for name, param in llm.named_parameters():
        if f"lora_B.{adapter}." in name:
            param.data.copy_(torch.randn(param.shape, generator=gen) * 0.5)


def test_freeze_base_trains_only_lora():
    llm = _build(lora=LORA)
    trainable = [n for n, p in llm.named_parameters() if p.requires_grad]
    frozen = [n for n, p in llm.named_parameters() if not p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # 2 layers x 4 projections x (A, B)
    assert len(trainable) == TINY_LLAMA_CONFIG["num_hidden_layers"] * 4 * 2
    assert frozen and not any("lora_" in n for n in frozen)
    out = llm.forward_train(llm.build_batch(BLOCKS, num_prefix=P), torch.randn(1, P, llm.hidden_size))
    out["loss_lm"].backward()
    assert all(p.grad is not None for n, p in llm.named_parameters() if "lora_A" in n)


def test_full_finetune_and_frozen_without_lora():
    full = _build(lora=None, freeze_base=False)
    assert all(p.requires_grad for p in full.parameters())
    frozen = _build(lora=None, freeze_base=True)
    assert not any(p.requires_grad for p in frozen.parameters())
    both = _build(lora=LORA, freeze_base=False)
    assert all(p.requires_grad for p in both.parameters())


def test_multi_lora_switches_outputs():
    base = _logits(_build())
    llm = _build(lora=LORA, adapter_names=["perception", "planning"])
    torch.testing.assert_close(_logits(llm), base, atol=1e-6, rtol=0)  # B = 0: identity at init
    _randomise(llm, "planning", seed=1)
    torch.testing.assert_close(_logits(llm), base, atol=1e-6, rtol=0)  # inactive adapter: no effect
    llm.set_adapter("planning")
    planning = _logits(llm)
    assert (planning - base).abs().max() > 1e-2
    llm.set_adapter("perception")
    torch.testing.assert_close(_logits(llm), base, atol=1e-6, rtol=0)
    # every adapter stays trainable whichever is active
    assert all(p.requires_grad for n, p in llm.named_parameters() if "lora_" in n)
    with pytest.raises(KeyError, match="no LoRA adapter named"):
        llm.set_adapter("prediction")
    with pytest.raises(RuntimeError, match="no LoRA adapters"):
        _build().set_adapter("planning")


def test_save_load_round_trip(tmp_path):
    names = ["perception", "planning"]
    llm = _build(lora=LORA, adapter_names=names)
    _randomise(llm, "perception", seed=1)
    _randomise(llm, "planning", seed=2)
    ref = {}
    for name in names:
        llm.set_adapter(name)
        ref[name] = _logits(llm)
    llm.save_adapters(str(tmp_path))
    for name in names:
        with open(os.path.join(tmp_path, name, "adapter_config.json")) as f:
            assert json.load(f)["r"] == LORA["r"]
        assert os.path.isfile(os.path.join(tmp_path, name, "adapter_model.safetensors"))

    fresh = _build(lora=LORA, adapter_names=names)
    fresh.set_adapter("planning")
    assert (_logits(fresh) - ref["planning"]).abs().max() > 1e-2  # not loaded yet
    fresh.load_adapters(str(tmp_path))
    for name in names:
        fresh.set_adapter(name)
        torch.testing.assert_close(_logits(fresh), ref[name], atol=0, rtol=0)


def test_load_rejects_mismatched_config(tmp_path):
    llm = _build(lora=LORA)
    llm.save_adapters(str(tmp_path))
    other = _build(lora=dict(LORA, r=2))
    with pytest.raises(ValueError, match="adapter_config.json"):
        other.load_adapters(str(tmp_path))
    missing = _build(lora=LORA, adapter_names=["nope"])
    with pytest.raises(FileNotFoundError, match="nope"):
        missing.load_adapters(str(tmp_path))


def test_unknown_lora_key_fails_loudly():
    with pytest.raises(KeyError, match="rank"):
        _build(lora=dict(rank=4))

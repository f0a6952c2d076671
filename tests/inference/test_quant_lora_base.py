"""int4 of the base layers under unmerged LoRA adapters (QLoRA-style serving), multi-adapter safety."""
import types

import pytest
import torch

from bevlm.inference.ptq import quantize_bevvlm
from bevlm.inference.quantization import (GPTQSettings, QuantLinear4, RTNSettings, load_quantized, quantize_model,
                                          save_quantized)
from bevlm.inference.quantization.int4 import dequantize, quantize_rtn
from bevlm.models.llm import HFCausalLM
from bevlm.testing import TINY_LLAMA_CONFIG

torch.set_num_threads(1)

CONFIG = dict(TINY_LLAMA_CONFIG, hidden_size=128, intermediate_size=256)
LORA = dict(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                        "up_proj", "down_proj"])
ADAPTERS = ["day", "night"]


def _llm() -> HFCausalLM:
    """Two adapters with non-zero weights; base Linears snapped onto a Q4_1-style grid (group 32)."""
    torch.manual_seed(0)
    llm = HFCausalLM(tiny_config=CONFIG, lora=LORA, adapter_names=ADAPTERS).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in llm.named_parameters():
            if ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
            elif "base_layer.weight" in name:
                param.copy_(dequantize(*quantize_rtn(param, 32, zero_point="offset"), 32, zero_point="offset"))
    return llm


def _logits(llm: HFCausalLM, adapter: str) -> torch.Tensor:
    llm.set_adapter(adapter)
    ids = torch.randint(4, CONFIG["vocab_size"], (2, 16), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return llm.model(input_ids=ids).logits


def test_base_on_its_grid_is_kept_exactly_and_adapters_stay_switchable(tmp_path):
    llm = _llm()
    ref = {a: _logits(llm, a) for a in ADAPTERS}
    assert (ref["day"] - ref["night"]).abs().max() > 1e-2
    with pytest.raises(ValueError, match="keep_lora=True"):
        quantize_model(llm, dict(method="rtn", group_size=32))
    # lora_dtype=None: the adapters stay fp32, so the logits are compared at fp32 precision
    report = quantize_model(llm, RTNSettings(group_size=32, kernel="dequant", zero_point="offset", keep_lora=True,
                                             lora_dtype=None))
    assert len(report.layers) == 7 * CONFIG["num_hidden_layers"]
    assert all(n.endswith(".base_layer") and isinstance(llm.get_submodule(n), QuantLinear4) for n in report.layers)
    assert sum(1 for n, _ in llm.named_modules() if n.endswith("lora_A.night")) == len(report.layers)
    assert report.linear_bytes_after <= 0.32 * report.linear_bytes_fp16  # 4 bits + 2 fp16 per 32
    for a in ADAPTERS:  # the base is reproduced exactly; each adapter still adds its own delta
        torch.testing.assert_close(_logits(llm, a), ref[a], atol=1e-5, rtol=0)
    path = str(tmp_path / "q.safetensors")
    save_quantized(llm, path)
    torch.manual_seed(0)
    fresh = load_quantized(HFCausalLM(tiny_config=CONFIG, lora=LORA, adapter_names=ADAPTERS).eval(), path,
                           kernel="dequant")
    for a in ADAPTERS:
        torch.testing.assert_close(_logits(fresh, a), ref[a], atol=1e-5, rtol=0)


def test_integer_zero_points_do_not_keep_the_grid():
    llm = _llm()
    ref = _logits(llm, "day")
    quantize_model(llm, dict(method="rtn", group_size=64, kernel="dequant", keep_lora=True))
    assert (_logits(llm, "day") - ref).abs().max() > 1e-4


def test_quantize_bevvlm_refuses_to_merge_several_adapters_and_keeps_them_in_bf16():
    llm = _llm()
    ref = {a: _logits(llm, a) for a in ADAPTERS}
    with pytest.raises(ValueError, match="keep_lora=True"):
        quantize_bevvlm(types.SimpleNamespace(llm=llm), dict(method="rtn", group_size=32))
    report = quantize_bevvlm(types.SimpleNamespace(llm=llm),
                             dict(method="rtn", group_size=32, kernel="dequant", zero_point="offset", keep_lora=True))
    assert report.layers and {p.dtype for n, p in llm.named_parameters() if ".lora_" in n} == {torch.bfloat16}
    for a in ADAPTERS:  # bf16 adapters (and their bf16 inputs): within bf16 rounding, 2 % of the logit range
        err = float((_logits(llm, a) - ref[a]).abs().max())
        assert 0 < err < 2e-2 * float(ref[a].abs().max()), err
    assert (_logits(llm, "day") - _logits(llm, "night")).abs().max() > 1e-2
    plain = HFCausalLM(tiny_config=CONFIG, lora=None).eval()
    with pytest.raises(ValueError, match="no LoRA adapters"):
        quantize_bevvlm(types.SimpleNamespace(llm=plain), dict(method="rtn", group_size=32, keep_lora=True))


def test_gptq_calibrates_the_base_layers_under_lora():
    llm = _llm()
    ref = _logits(llm, "night")

    def calib(module):
        for seed in range(2):
            ids = torch.randint(4, CONFIG["vocab_size"], (1, 24), generator=torch.Generator().manual_seed(seed))
            module.model(input_ids=ids)

    report = quantize_model(llm, GPTQSettings(group_size=32, kernel="dequant", zero_point="offset", keep_lora=True,
                                              lora_dtype=None), calib_fn=calib)
    assert report.calib_runs == CONFIG["num_hidden_layers"]
    torch.testing.assert_close(_logits(llm, "night"), ref, atol=1e-5, rtol=0)

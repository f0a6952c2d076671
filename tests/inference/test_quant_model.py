"""quantize_model on the tiny Llama: RTN / GPTQ / int8 dynamic, bytes, save/load, LoRA merge."""
import pytest
import torch

from bevlm.inference.quantization import (QuantLinear4, load_quantized, merge_lora_, quantize_model,
                                          read_quant_config, save_quantized)
from bevlm.models.llm import HFCausalLM
from bevlm.testing import TINY_LLAMA_CONFIG

torch.set_num_threads(1)

# Wider than TINY_LLAMA_CONFIG so every Linear input (128 / 256) holds whole groups of 128.
CONFIG = dict(TINY_LLAMA_CONFIG, hidden_size=128, intermediate_size=256)
GROUP = 128
N_LINEARS = 7 * CONFIG["num_hidden_layers"]
QUESTION = "What are the important objects in the current scene?"


def _llm(seed: int = 0, lora: dict | None = None) -> HFCausalLM:
    torch.manual_seed(seed)
    return HFCausalLM(tiny_config=CONFIG, lora=lora).eval()


def _ids() -> torch.Tensor:
    return torch.randint(4, CONFIG["vocab_size"], (2, 24), generator=torch.Generator().manual_seed(7))


def _logits(llm: HFCausalLM) -> torch.Tensor:
    with torch.no_grad():
        return llm.lm(input_ids=_ids()).logits


def _prefix(llm: HFCausalLM, seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 5, llm.hidden_size, generator=torch.Generator().manual_seed(seed))


def _calib(llm: HFCausalLM):
    def run(module):
        assert module is llm
        for seed in range(3):
            cache = llm.prefill(_prefix(llm, seed))
            llm.generate_ids(cache, QUESTION, max_new_tokens=4)
    return run


def _assert_within_rtn_bound(layer: QuantLinear4, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """RTN int4 with integer zero points and min-max ranges (``int4.group_params``, no clip search):
    each group of g input columns has its range widened to contain 0, scale
    ``s = (max - min) / 15`` rounded UP to fp16, zero ``z = round(-min / s)``, code
    ``q = clamp(round(w / s) + z, 0, 15)`` and ``w_hat = (q - z) * s``; so every dequantised weight
    is within ``s / 2`` of the original, and for any input x the layer's output error is bounded
    by ``|y_hat_o - y_o| <= sum_i |x_i| * s[o, i // g] / 2``."""
    g = layer.group_size
    half_step = layer.scales.float().repeat_interleave(g, dim=1) / 2  # [out, in]
    err = (layer.dequantized_weight() - weight).abs()
    assert bool((err <= half_step * (1 + 1e-5) + 1e-7).all()), float((err - half_step).max())
    assert float(err.max()) > 0  # the weights were really quantised
    x = torch.randn(16, layer.in_features, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        out_err = (layer(x) - torch.nn.functional.linear(x, weight, bias)).abs()  # [16, out]
    bound = x.abs() @ half_step.t()  # [16, out]
    assert bool((out_err <= bound * (1 + 1e-4) + 1e-5).all()), float((out_err - bound).max())


def test_rtn_model_generates_and_shrinks_linears():
    llm = _llm()
    fp_logits = _logits(llm)
    originals = {n: (m.weight.detach().clone(), None if m.bias is None else m.bias.detach().clone())
                 for n, m in llm.named_modules() if isinstance(m, torch.nn.Linear)}
    report = quantize_model(llm, dict(method="rtn", group_size=GROUP, kernel="dequant"))
    assert len(report.layers) == N_LINEARS
    assert all(isinstance(llm.get_submodule(n), QuantLinear4) for n in report.layers)
    assert type(llm.lm.lm_head) is torch.nn.Linear  # excluded
    assert report.linear_bytes_after <= 0.3 * report.linear_bytes_fp16, report.table()
    assert report.module_bytes_after < report.module_bytes_before
    ids = llm.generate_ids(llm.prefill(_prefix(llm)), QUESTION, max_new_tokens=6)
    assert 0 < len(ids) <= 6 and all(isinstance(i, int) for i in ids)
    q_logits = _logits(llm)
    assert not torch.equal(q_logits, fp_logits)
    for name in report.layers:
        _assert_within_rtn_bound(llm.get_submodule(name), *originals[name])
    assert "layers replaced" in report.table()


def test_gptq_model_sequential_blocks():
    llm = _llm()
    report = quantize_model(llm, dict(method="gptq", group_size=GROUP, kernel="auto"), calib_fn=_calib(llm))
    assert report.calib_runs == CONFIG["num_hidden_layers"]  # one calibration run per decoder layer
    assert len(report.layers) == N_LINEARS
    assert {llm.get_submodule(n).method for n in report.layers} == {"gptq"}
    ids = llm.generate_ids(llm.prefill(_prefix(llm)), QUESTION, max_new_tokens=6)
    assert 0 < len(ids) <= 6
    with pytest.raises(ValueError, match="calib_fn"):
        quantize_model(_llm(), dict(method="gptq", group_size=GROUP))


def test_save_load_round_trip_gives_identical_logits(tmp_path):
    llm = _llm(seed=0)
    quantize_model(llm, dict(method="rtn", group_size=GROUP, kernel="dequant"))
    expected = _logits(llm)
    path = str(tmp_path / "sub" / "quant.safetensors")
    config = save_quantized(llm, path)
    assert set(config["layers"]) == {n for n, m in llm.named_modules() if isinstance(m, QuantLinear4)}
    assert read_quant_config(path)["layers"] == config["layers"]
    assert config["aliases"]  # tied embedding / lm_head stored once
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["quant.safetensors"]  # no temp left
    skeleton = _llm(seed=123)  # different random weights
    assert not torch.equal(_logits(skeleton), expected)
    restored = load_quantized(skeleton, path, kernel="dequant")
    assert torch.equal(_logits(restored), expected)
    assert restored.lm.lm_head.weight.data_ptr() == restored.lm.get_input_embeddings().weight.data_ptr()
    with pytest.raises(ValueError, match="no QuantLinear4"):
        save_quantized(_llm(), str(tmp_path / "x.safetensors"))


def test_int8_dynamic_logits_close_to_fp32():
    llm = _llm()
    fp_logits = _logits(llm)
    report = quantize_model(llm, dict(method="int8_dynamic"))
    assert len(report.layers) == N_LINEARS and report.bits == 8
    assert report.linear_bytes_after < 0.6 * report.linear_bytes_fp16
    q_logits = _logits(llm)
    # Bound (fbgemm: per-channel int8 weights, per-tensor 7-bit-range uint8 activations): relative L2
    # logit error <= 6% (measured ~3% on this random model; int4 RTN g128 gives ~17%), max |delta|
    # <= 5% of max |logit|, and the greedy token agrees at >= 95% of positions.
    rel = float((q_logits - fp_logits).norm() / fp_logits.norm())
    assert rel <= 0.06, rel
    assert float((q_logits - fp_logits).abs().max()) <= 0.05 * float(fp_logits.abs().max())
    assert float((q_logits.argmax(-1) == fp_logits.argmax(-1)).float().mean()) >= 0.95
    assert 0 < len(llm.generate_ids(llm.prefill(_prefix(llm)), QUESTION, max_new_tokens=4)) <= 4
    with pytest.raises(ValueError, match="int8"):
        save_quantized(llm, "/nonexistent/never_written.safetensors")


def test_merge_lora_then_quantize():
    llm = _llm(lora=dict(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in llm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2, generator=torch.Generator().manual_seed(9))  # B = 0 at init: make LoRA matter
    with pytest.raises(ValueError, match="merge_lora_"):
        quantize_model(llm, dict(method="rtn", group_size=GROUP))
    with_lora = _logits(llm)
    merge_lora_(llm)
    assert llm.adapter_names == [] and not any("lora" in n for n, _ in llm.named_modules())
    torch.testing.assert_close(_logits(llm), with_lora, atol=1e-5, rtol=0)
    report = quantize_model(llm, dict(method="rtn", group_size=GROUP, kernel="dequant"))
    assert len(report.layers) == N_LINEARS


def test_bad_arguments_fail_loudly():
    with pytest.raises(ValueError, match="group_size"):
        quantize_model(_llm(), dict(method="rtn", group_size=96))
    with pytest.raises(ValueError, match="no nn.Linear"):
        quantize_model(_llm(), dict(method="rtn", include=("not_a_layer",)))
    with pytest.raises(ValueError, match="bits"):
        quantize_model(_llm(), dict(method="rtn", bits=3))


def test_group_sizes_checked_before_any_layer_is_replaced():
    """A group size that does not fit (a layer's, the table's) or a ``group_sizes`` key naming no
    layer is refused up front: the model is left untouched (GPTQ would have run minutes first)."""
    llm = _llm(seed=0)
    width = llm.lm.get_input_embeddings().embedding_dim
    before = {n: p.clone() for n, p in llm.state_dict().items()}
    bad_table = next(g for g in (3, 5, 7, 11) if width % g)

    def calib_never_runs(module):
        raise AssertionError("calibration ran before the arguments were checked")

    with pytest.raises(ValueError, match="embed_group_size"):
        quantize_model(llm, dict(method="gptq", group_size=GROUP, kernel="dequant", embeddings=True,
                                 embed_group_size=bad_table), calib_fn=calib_never_runs)
    with pytest.raises(ValueError, match="gate_prj"):
        quantize_model(llm, dict(method="rtn", group_size=GROUP, group_sizes={"gate_prj": 64}))
    with pytest.raises(ValueError, match="down_proj: group_size=.* must be positive and divide"):
        quantize_model(llm, dict(method="gptq", group_size=GROUP, group_sizes={"down_proj": bad_table}),
                       calib_fn=calib_never_runs)
    assert not any(isinstance(m, QuantLinear4) for m in llm.modules())
    assert all(torch.equal(p, before[n]) for n, p in llm.state_dict().items())


def test_mixed_group_sizes_by_layer_kind_and_table_round_trip(tmp_path):
    """``group_sizes`` gives the named layer kinds their own group size, ``embed_group_size`` the table;
    the codes of each layer are those of quantising it alone at its size, and the file keeps them."""
    from bevlm.inference.quantization import QuantEmbedding4

    reference = _llm(seed=0)
    mixed = _llm(seed=0)
    uniform = _llm(seed=0)
    report = quantize_model(mixed, dict(method="rtn", group_size=32, zero_point="offset", kernel="dequant",
                                        group_sizes={"gate_proj": 128, "up_proj": 128}, embeddings=True,
                                        embed_group_size=128))
    uniform_report = quantize_model(uniform, dict(method="rtn", group_size=32, zero_point="offset", kernel="dequant",
                                                  embeddings=True))
    for name in report.layers:
        module = mixed.get_submodule(name)
        if name.endswith("lm_head"):  # the tied head reads the table's codes
            assert module.group_size == 128
        elif isinstance(module, QuantLinear4):
            expected = 128 if name.split(".")[-1] in ("gate_proj", "up_proj") else 32
            assert module.group_size == expected, name
            alone = QuantLinear4.from_linear(reference.get_submodule(name), expected, "dequant", 0, "offset")
            assert torch.equal(module.dequantized_weight(), alone.dequantized_weight()), name
    assert isinstance(mixed.lm.get_input_embeddings(), QuantEmbedding4)
    assert mixed.lm.get_input_embeddings().group_size == 128
    # coarser groups store fewer fp16 scales / offsets
    assert report.linear_bytes_after < uniform_report.linear_bytes_after
    expected_logits = _logits(mixed)
    path = str(tmp_path / "mixed.safetensors")
    save_quantized(mixed, path)
    restored = load_quantized(_llm(seed=5), path, kernel="dequant")
    assert restored.lm.model.layers[0].mlp.gate_proj.group_size == 128
    assert restored.lm.model.layers[0].self_attn.q_proj.group_size == 32
    assert torch.equal(_logits(restored), expected_logits)


@pytest.mark.parametrize("kernel", ["dequant", "cached"])
def test_resident_bytes_count_the_kernels_run_time_copies(kernel):
    """Storage bytes are not what a running int4 model holds: ``kernel='cached'`` keeps an fp32 copy
    of every weight, ``'dequant'`` nothing beyond the packed codes. ``llm_resident_bytes`` (the
    benchmark's resident column) must tell them apart."""
    from bevlm.inference.variants import llm_read_bytes, llm_resident_bytes, llm_weight_bytes

    from bevlm.inference.quantization import kernels as quant_kernels

    quant_kernels.clear_workspace()
    llm = _llm()
    linears = {n: m for n, m in llm.lm.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n}
    fp16_linear_bytes = sum(m.weight.numel() * 2 for m in linears.values())
    quantize_model(llm, dict(method="rtn", group_size=GROUP, kernel=kernel))
    holder = torch.nn.Module()
    holder.llm = llm
    stored = llm_weight_bytes(holder)
    _logits(llm)  # kernels build their run-time copies lazily, at the first forward
    layers = [m for m in llm.lm.modules() if isinstance(m, QuantLinear4)]
    assert len(layers) == N_LINEARS
    packed = sum(layer.weight_bytes() for layer in layers)
    # int4 codes + fp16 scale and zero per group of 128: 0.5 + 4 / 128 bytes per weight (0.27x fp16)
    assert packed <= 0.30 * fp16_linear_bytes
    resident = sum(layer.runtime_bytes() for layer in layers)
    # what a decode step streams: the packed codes (dequant) or the fp32 copies (cached)
    read = sum(layer.read_bytes("decode") for layer in layers)
    if kernel == "dequant":
        assert read == packed and llm_read_bytes(holder) == stored
    else:
        assert read == sum(layer.out_features * layer.in_features * 4 + layer.bias.numel() * 4
                           if layer.bias is not None else layer.out_features * layer.in_features * 4
                           for layer in layers)
        assert llm_read_bytes(holder) == stored - packed + read
    if kernel == "dequant":  # + the one shared workspace: the largest layer's float weight and its codes
        largest = max(layer.out_features * layer.in_features for layer in layers)
        assert quant_kernels.workspace_bytes() == largest * 4 + largest // 2
        assert resident == packed and llm_resident_bytes(holder) == stored + quant_kernels.workspace_bytes()
    else:  # an fp32 copy of every weight besides the codes: more than the fp16 model's linears
        assert resident >= packed + 2 * fp16_linear_bytes
        assert llm_resident_bytes(holder) == stored + resident - packed > 2 * fp16_linear_bytes

"""Activation-aware scaling (AWQ) before int4 GPTQ: the search, the scaled layer, the model path."""
import pytest
import torch
import torch.nn.functional as F

from bevlm.inference.quantization import QuantLinear4, load_quantized, quantize_model, save_quantized
from bevlm.inference.quantization.awq import awq_scales, output_error
from bevlm.inference.quantization.gptq import HessianAccumulator
from bevlm.inference.quantization.int4 import dequantize, quantize_rtn
from bevlm.inference.quantization.settings import quant_settings

torch.set_num_threads(1)


def _outlier_inputs(n: int, d: int, seed: int) -> torch.Tensor:
    """Inputs whose 4 first channels are 30x larger than the rest (the activation outliers of LLMs)."""
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    x[:, :4] *= 30.0
    return x


def _hessian(x: torch.Tensor) -> torch.Tensor:
    acc = HessianAccumulator(x.shape[1])
    acc.add(x)
    return acc.hessian


def test_search_scores_candidates_by_the_exact_output_error():
    """The reported errors are ||X W^T - X W_hat^T||^2 (times 2 / n, the Hessian's scale) of the
    plain and of the chosen quantisation; alpha = 0 is on the grid, so the choice is never worse."""
    torch.manual_seed(0)
    w, x = torch.randn(48, 64), _outlier_inputs(256, 64, 1)
    h = _hessian(x)
    s, alpha, errors = awq_scales(w, h, group_size=32, grid=10)
    q, sc, z = quantize_rtn(w * s, 32)
    w_hat = dequantize(q, sc, z, 32) / s
    direct = float(((x @ (w_hat - w).t()) ** 2).sum()) * 2 / x.shape[0]
    assert errors["error"] == pytest.approx(direct, rel=1e-4)
    q0, sc0, z0 = quantize_rtn(w, 32)
    assert errors["error_plain"] == pytest.approx(output_error(w, dequantize(q0, sc0, z0, 32), h), rel=1e-9)
    assert errors["error"] <= errors["error_plain"] and 0.0 <= alpha <= 1.0


def test_scaling_helps_on_held_out_inputs_with_outlier_channels():
    torch.manual_seed(0)
    w = torch.randn(64, 128) * 0.05
    calib, held_out = _outlier_inputs(512, 128, 1), _outlier_inputs(512, 128, 2)
    s, alpha, _ = awq_scales(w, _hessian(calib), group_size=32, grid=10)
    assert alpha > 0
    q, sc, z = quantize_rtn(w * s, 32)
    w_awq = dequantize(q, sc, z, 32) / s
    q0, sc0, z0 = quantize_rtn(w, 32)
    w_rtn = dequantize(q0, sc0, z0, 32)
    err = lambda wh: float(((held_out @ (wh - w).t()) ** 2).mean())  # noqa: E731
    assert err(w_awq) < 0.7 * err(w_rtn)


@pytest.mark.parametrize("kernel", ["dequant", "cached", "auto"])
def test_layer_with_input_scale_computes_its_dequantised_weight(kernel):
    torch.manual_seed(0)
    w, scale = torch.randn(32, 64), torch.rand(64) + 0.5
    q, sc, z = quantize_rtn(w * scale, 32)
    layer = QuantLinear4.from_codes(q, sc, z, torch.randn(32), 32, kernel=kernel, input_scale=1.0 / scale)
    x = torch.randn(5, 64)
    expected = F.linear(x, dequantize(q, sc, z, 32) / scale, layer.bias)
    torch.testing.assert_close(layer.dequantized_weight(), dequantize(q, sc, z, 32) / scale)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, rtol=1e-4, atol=1e-4)
    assert layer.weight_bytes() == QuantLinear4.from_codes(q, sc, z, layer.bias, 32).weight_bytes() + 64 * 4


def test_gptq_with_awq_on_the_tiny_llm_reports_every_layer_and_round_trips(tmp_path):
    from tests.inference.test_quant_model import GROUP, N_LINEARS, _calib, _llm, _logits

    llm = _llm()
    report = quantize_model(llm, dict(method="gptq", group_size=GROUP, kernel="dequant", awq_grid=4), _calib(llm))
    assert len(report.awq) == N_LINEARS
    assert all(r["error"] <= r["error_plain"] and r["alpha"] in (0, 0.25, 0.5, 0.75, 1.0) for r in report.awq.values())
    layers = [m for m in llm.lm.modules() if isinstance(m, QuantLinear4)]
    assert all(m.input_scale is not None for m in layers)
    expected = _logits(llm)
    path = str(tmp_path / "awq.safetensors")
    save_quantized(llm, path)
    restored = load_quantized(_llm(seed=3), path, kernel="dequant")
    assert torch.equal(_logits(restored), expected)


def test_awq_grid_is_checked():
    with pytest.raises(ValueError, match="awq_grid=-1 must be an integer >= 0"):
        quant_settings(dict(method="gptq", awq_grid=-1))
    assert quant_settings(dict(method="gptq", awq_grid=10)).awq_grid == 10

"""The ``llm_dtype`` variant switch: the LLM in bf16 (vision fp32), alone and over int4 layers."""
import copy

import pytest
import torch
from mmengine.registry import init_default_scope

from bevlm.inference.quantization import QuantLinear4
from bevlm.inference.variants import build_variant
from tests.model_helpers import tiny_bevvlm_one_frame

init_default_scope("bevlm")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup(tiny_world):
    return tiny_bevvlm_one_frame(tiny_world, encoder_layers=1)


def _predict(model, imgs, samples):
    with torch.no_grad():
        return model(inputs={"imgs": imgs}, data_samples=copy.deepcopy(samples), mode="predict")[0]


def test_bf16_llm_answers_and_keeps_vision_and_buffers_fp32(setup):
    model, imgs, samples = setup
    plain = _predict(model, imgs, samples)
    bf16 = build_variant(model, dict(llm_dtype="bfloat16"), log=lambda *_: None)
    assert {p.dtype for p in bf16.llm.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in bf16.traj_head.parameters()} == {torch.float32}
    assert {b.dtype for b in bf16.llm.buffers() if b.is_floating_point()} <= {torch.float32}  # rotary freqs
    out = _predict(bf16, imgs, samples)
    assert len(out.pred_answers) == len(plain.pred_answers) and all(isinstance(a, str) for a in out.pred_answers.values())
    traj = torch.as_tensor(out.pred_traj)
    assert traj.shape == torch.as_tensor(plain.pred_traj).shape and torch.isfinite(traj).all()
    assert {p.dtype for p in model.llm.parameters()} == {torch.float32}  # the base model is untouched
    with pytest.raises(ValueError, match="llm_dtype"):
        build_variant(model, dict(llm_dtype="int8"), log=lambda *_: None)


def test_bf16_over_int4_keeps_the_stored_codes(setup):
    model, imgs, samples = setup
    spec = dict(quant=dict(method="rtn", group_size=32, kernel="cached", zero_point="offset", keep_lora=True))
    q32 = build_variant(model, spec, log=lambda *_: None)
    q16 = build_variant(model, dict(spec, llm_dtype="bfloat16"), log=lambda *_: None)
    layers32 = {n: m for n, m in q32.llm.named_modules() if isinstance(m, QuantLinear4)}
    layers16 = {n: m for n, m in q16.llm.named_modules() if isinstance(m, QuantLinear4)}
    assert layers16 and layers16.keys() == layers32.keys()
    for name, layer in layers16.items():
        assert layer.scales.dtype == torch.float16 and torch.equal(layer.scales, layers32[name].scales)
        assert torch.equal(layer.qweight, layers32[name].qweight)
    out = _predict(q16, imgs, samples)
    assert all(isinstance(a, str) for a in out.pred_answers.values())

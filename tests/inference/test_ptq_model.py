"""Post-training quantisation of the tiny BEVVLM: calibration frames, both GPTQ calibration modes."""
import copy

import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from bevlm.inference.ptq import CalibFrame, calibration_prefixes, quantize_bevvlm
from bevlm.inference.quantization import quant_settings
from tests.model_helpers import tiny_bevvlm_and_frames

init_default_scope("bevlm")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup(tiny_world):
    model, ds, _ = tiny_bevvlm_and_frames(tiny_world, encoder_layers=1)
    calib = calibration_prefixes(model, [pseudo_collate([ds[i]]) for i in range(2)], max_questions=6)
    return model, calib


def _logits(model, frame):
    batch = model.llm.build_batch([list(zip(frame.questions, frame.answers))], frame.prefix.shape[1])
    with torch.no_grad():
        return model.llm.answer_logits(batch, frame.prefix)[0]


def test_calibration_frames_carry_questions_and_answers(setup):
    model, calib = setup
    assert len(calib) == 2 and all(isinstance(f, CalibFrame) for f in calib)
    for f in calib:
        assert f.prefix.dim() == 3 and f.prefix.shape[0] == 1
        assert 0 < len(f.questions) == len(f.answers) <= 6 and all(f.answers)


@pytest.mark.parametrize("mode", ["teacher_forced", "greedy"])
def test_gptq_calibration_modes_run_and_stay_close(setup, mode):
    model, calib = setup
    ref = [_logits(model, f) for f in calib]
    q = copy.deepcopy(model)
    report = quantize_bevvlm(q, dict(method="gptq", group_size=32, calib_mode=mode, kernel="dequant", clip_search=10),
                             calib=calib)
    assert report.calib_runs == q.llm.num_layers and report.ratio_vs_fp16 < 0.35
    rtn = quantize_bevvlm(copy.deepcopy(model), dict(method="rtn", group_size=32, kernel="dequant"))
    assert rtn.calib_runs == 0
    err = sum(float((_logits(q, f) - r).pow(2).mean()) for f, r in zip(calib, ref))
    scale = sum(float(r.pow(2).mean()) for r in ref)
    assert err < 0.1 * scale, (err, scale)  # int4 of a random tiny LLM: logits within 10 % (energy)


def test_unknown_calibration_mode_is_refused(setup):
    model, calib = setup
    with pytest.raises(ValueError, match="calib_mode"):
        quantize_bevvlm(copy.deepcopy(model), dict(method="gptq", group_size=32, calib_mode="sampled"),
                        calib=calib)


@pytest.mark.parametrize("spec", [
    dict(method="rtn", group_size=32, kernel="dequant", zero_point="offset", keep_lora=True, embeddings=True),
    dict(method="rtn", group_size=32, kernel="dequant")])
def test_quantised_llm_file_round_trip(setup, tiny_world, tmp_path, spec):
    """save_quantized_llm -> a freshly built model (other float weights) -> load_quantized_llm:
    the same logits, LoRA kept (bf16) or merged as the spec says."""
    from bevlm.inference.ptq import load_quantized_llm, save_quantized_llm

    model, calib = setup
    q = copy.deepcopy(model)
    quantize_bevvlm(q, **spec)
    expected = [_logits(q, f) for f in calib]
    path = str(tmp_path / "llm.safetensors")
    save_quantized_llm(q, path, spec)
    fresh, _, _ = tiny_bevvlm_and_frames(tiny_world, encoder_layers=1)
    with torch.no_grad():  # other float weights: everything of the LLM must come from the file
        for p in fresh.llm.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    assert load_quantized_llm(fresh, path) == quant_settings(spec)
    has_lora = any(".lora_" in n for n, _ in fresh.llm.named_parameters())
    assert has_lora == bool(spec.get("keep_lora"))
    for f, e in zip(calib, expected):
        torch.testing.assert_close(_logits(fresh, f), e, atol=0, rtol=0)

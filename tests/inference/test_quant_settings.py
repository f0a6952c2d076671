"""Typed quantisation settings: validation, unknown keys, the saved round trip, one object through
the hook, the model-level and the layer-level paths."""
import dataclasses
import json
import os
import types

import pytest
import torch
from mmengine.config import Config

from bevlm.engine.hooks import PostTrainingQuantHook
from bevlm.inference.ptq import CalibFrame, load_quantized_llm, quantize_bevvlm, save_quantized_llm
from bevlm.inference.quantization import (GPTQSettings, Int8DynamicSettings, QuantLinear4, RTNSettings,
                                          load_quantized, quant_settings, quantize_model, read_quant_config,
                                          read_quant_settings, save_quantized)
from bevlm.models.llm import HFCausalLM
from bevlm.testing import TINY_LLAMA_CONFIG

torch.set_num_threads(1)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = dict(TINY_LLAMA_CONFIG, hidden_size=128, intermediate_size=256)


def _llm(seed: int = 0) -> HFCausalLM:
    torch.manual_seed(seed)
    return HFCausalLM(tiny_config=CONFIG).eval()


class _Wrapper(torch.nn.Module):
    """A BEVVLM stand-in: the hook and quantize_bevvlm only touch ``model.llm``."""

    def __init__(self, llm: HFCausalLM) -> None:
        super().__init__()
        self.llm = llm


def _quantised_state(module: torch.nn.Module) -> dict:
    """Every buffer of the quantised layers (codes, scales, zeros / offsets, biases)."""
    return {k: v for k, v in module.state_dict().items() if k.rsplit(".", 1)[-1] in ("qweight", "scales", "zeros")}


@pytest.mark.parametrize("spec, message", [
    (dict(method="rtn", bits=8), "bits=8.*use bits=4, or method='int8_dynamic'"),
    (dict(method="rtn", group_size=0), "group_size=0 must be a positive integer"),
    (dict(method="rtn", group_size=True), "group_size=True must be a positive integer"),
    (dict(method="rtn", group_sizes={"gate_proj": -64}), r"group_sizes\['gate_proj'\]=-64 must be a positive"),
    (dict(method="rtn", group_sizes={"mlp.gate_proj": 64}), "group_sizes key 'mlp.gate_proj' is not a layer-name part"),
    (dict(method="rtn", group_sizes=[64]), "group_sizes=.* must be a dict"),
    (dict(method="rtn", include="q_proj"), "include='q_proj' must be a list or tuple"),
    (dict(method="rtn", include=()), r"include=\(\) selects no layer"),
    (dict(method="rtn", exclude=("model.lm_head",)), "exclude entries .* are not single name parts"),
    (dict(method="rtn", zero_point="float"), "zero_point='float' is not one of"),
    (dict(method="rtn", kernel="fast"), "kernel='fast' is not one of"),
    (dict(method="rtn", embeddings="int2"), "embeddings='int2' is not one of"),
    (dict(method="rtn", embed_group_size=64), "embed_group_size=64 has no effect with embeddings=False"),
    (dict(method="rtn", embeddings="int8", embed_group_size=-1), "embed_group_size=-1 must be a positive"),
    (dict(method="rtn", clip_search=-1), "clip_search=-1 must be an integer >= 0"),
    (dict(method="rtn", keep_lora="yes"), "keep_lora='yes' must be True or False"),
    (dict(method="rtn", lora_dtype="int8"), "lora_dtype='int8' is not one of"),
    (dict(method="gptq", calib_mode="sampled"), "calib_mode='sampled' is not one of"),
    (dict(method="gptq", damping=0.0), r"damping=0.0 must be a fraction in \(0, 1\]"),
    (dict(method="gptq", act_order=1), "act_order=1 must be True or False"),
    (dict(method="gptq", calib_tokens=0), "calib_tokens=0 must be a positive integer"),
    (dict(method="int8_dynamic", per_channel="no"), "per_channel='no' must be True or False"),
    (dict(method="int8_dynamic", include=("q_proj", "")), "include entries .* are not single name parts"),
])
def test_bad_values_are_refused_naming_the_option_and_the_fix(spec, message):
    with pytest.raises(ValueError, match=message) as info:
        quant_settings(spec)
    assert f"method={spec['method']!r}" in str(info.value)


@pytest.mark.parametrize("spec, message", [
    (dict(method="rtn", lora_base=True),
     "unknown keys \\['lora_base'\\] \\('lora_base' is now called 'keep_lora'\\)"),
    (dict(method="gptq", percdamp=0.1), "'percdamp' is now called 'damping'"),
    (dict(method="rtn", act_order=True), "act_order=True is an option of method gptq, not of 'rtn'"),
    (dict(method="int8_dynamic", group_size=64), "group_size=64 is an option of method rtn / gptq"),
    (dict(method="rtn", group_szie=32),
     "unknown keys \\['group_szie'\\]; valid keys: \\['method', 'bits', 'group_size'"),
    (dict(group_size=32), "no 'method' key; add method='rtn' \\| 'gptq' \\| 'int8_dynamic'"),
    (dict(method="awq"), "method='awq' is not one of"),
])
def test_unknown_keys_and_methods_list_the_valid_ones(spec, message):
    with pytest.raises(ValueError, match=message):
        quant_settings(spec)


def test_every_class_lists_its_own_valid_keys():
    for method, cls in (("rtn", RTNSettings), ("gptq", GPTQSettings), ("int8_dynamic", Int8DynamicSettings)):
        with pytest.raises(ValueError) as info:
            quant_settings(dict(method=method, nope=1))
        valid = ["method"] + [f.name for f in dataclasses.fields(cls)]
        assert f"valid keys: {valid}" in str(info.value)


def test_settings_are_frozen_hashable_normalised_and_round_trip_through_json():
    s = quant_settings(dict(method="gptq", group_size=32, include=["q_proj", "gate_proj"], embeddings=True,
                            embed_group_size=64, group_sizes={"gate_proj": 64}, damping=1))
    assert isinstance(s, GPTQSettings) and s.method == "gptq"
    assert s.include == ("q_proj", "gate_proj") and s.embeddings == "int4" and s.damping == 1.0
    assert s.group_sizes == (("gate_proj", 64),) and s.group_size_of("model.layers.0.mlp.gate_proj") == 64
    assert s.group_size_of("model.layers.0.self_attn.q_proj") == 32 and s.table_group_size == 64
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.group_size = 64
    assert hash(s) == hash(quant_settings(s.to_dict()))
    assert quant_settings(json.loads(json.dumps(s.to_dict()))) == s
    assert quant_settings(s) is s
    assert s.replace(group_size=64).group_size == 64
    with pytest.raises(ValueError, match="group_size=-1"):
        s.replace(group_size=-1)
    assert quant_settings(dict(method="rtn", embeddings=True)) == RTNSettings(embeddings="int4")
    assert quant_settings(dict(method="int8_dynamic")) == Int8DynamicSettings()


def test_every_quant_switch_of_the_benchmark_config_is_valid():
    variants = Config.fromfile(os.path.join(REPO, "configs", "benchmarks", "default.py")).variants.to_dict()
    specs = {name: v["quant"] for name, v in variants.items() if v.get("quant")}
    assert specs
    for name, spec in specs.items():
        settings = quant_settings(spec)
        assert quant_settings(settings.to_dict()) == settings, name


@pytest.mark.parametrize("spec", [
    dict(method="rtn", group_size=32, zero_point="offset", kernel="dequant", embeddings="int8"),
    dict(method="gptq", group_size=32, kernel="dequant", act_order=True, embeddings=True, embed_group_size=64,
         group_sizes={"gate_proj": 64, "up_proj": 64}, clip_search=5),
])
def test_from_dict_then_save_metadata_then_load_round_trips(tmp_path, spec):
    settings = quant_settings(spec)
    llm = _llm()

    def calib(module):
        ids = torch.randint(4, CONFIG["vocab_size"], (2, 20), generator=torch.Generator().manual_seed(3))
        module.lm(input_ids=ids)

    quantize_model(llm, settings, calib_fn=calib if settings.method == "gptq" else None)
    path = str(tmp_path / "q.safetensors")
    save_quantized(llm, path, settings)
    assert read_quant_config(path)["settings"] == json.loads(json.dumps(settings.to_dict()))
    assert read_quant_settings(path) == settings
    restored = load_quantized(_llm(seed=9), path)  # kernel: the stored one
    assert {m.kernel for m in restored.modules() if isinstance(m, QuantLinear4)} == {"dequant"}
    ids = torch.randint(4, CONFIG["vocab_size"], (1, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(restored.lm(input_ids=ids).logits, llm.lm(input_ids=ids).logits)
    assert read_quant_settings(str(_saved_without_settings(tmp_path))) is None


def _saved_without_settings(tmp_path):
    llm = _llm()
    quantize_model(llm, RTNSettings(group_size=64, kernel="dequant"))
    path = tmp_path / "plain.safetensors"
    save_quantized(llm, str(path))
    return path


def test_model_level_file_of_an_older_quant_spec_still_loads(tmp_path):
    """A file written before the settings were stored (its spec dict under extra.quant_spec)."""
    spec = dict(method="rtn", group_size=64, kernel="dequant")
    llm = _llm()
    quantize_bevvlm(_Wrapper(llm), spec)
    path = str(tmp_path / "old.safetensors")
    save_quantized(llm, path, extra=dict(quant_spec=spec))
    fresh = _Wrapper(_llm(seed=3))
    assert load_quantized_llm(fresh, path) == quant_settings(spec)
    assert torch.equal(fresh.llm.lm.model.layers[0].mlp.up_proj.qweight, llm.lm.model.layers[0].mlp.up_proj.qweight)


def _frames(n: int = 2) -> list[CalibFrame]:
    gen = torch.Generator().manual_seed(11)
    return [CalibFrame(torch.randn(1, 4, CONFIG["hidden_size"], generator=gen),
                       ["What is the moving status of object <c1,CAM_FRONT,712.5,510.0>?", "Is it safe?"],
                       ["Going ahead.", "Yes, it is safe."]) for _ in range(n)]


def _teacher_forced(llm: HFCausalLM, frames: list[CalibFrame]):
    """The calibration forwards quantize_bevvlm runs for calib_mode='teacher_forced'."""
    def run(_module):
        for frame in frames:
            batch = llm.build_batch([list(zip(frame.questions, frame.answers))], frame.prefix.shape[1])
            llm.answer_logits(batch, frame.prefix)
    return run


@pytest.mark.parametrize("spec", [
    dict(method="rtn", group_size=32, zero_point="offset", clip_search=5, kernel="dequant", embeddings=True,
         embed_group_size=64, group_sizes={"gate_proj": 64}),
    dict(method="gptq", group_size=32, kernel="dequant", act_order=True, damping=0.05, embeddings=True,
         group_sizes={"down_proj": 64}),
])
def test_hook_model_level_and_layer_level_give_the_same_weights(monkeypatch, spec):
    """One settings object through PostTrainingQuantHook, quantize_bevvlm and quantize_model: the same
    codes, scales and zeros in every quantised layer."""
    settings = quant_settings(spec)
    frames = _frames()
    import bevlm.engine.hooks as hooks
    import bevlm.inference.variants as variants

    def calibration_frames(model, cfg, specs, calib_frames):  # the training split's frames, here synthetic
        assert specs == [dict(quant=settings.to_dict())]
        return frames, None

    monkeypatch.setattr(variants, "variant_inputs", calibration_frames)
    monkeypatch.setattr(hooks, "variant_inputs", calibration_frames, raising=False)
    hook = PostTrainingQuantHook(quant=spec)
    assert hook.settings == settings
    via_hook = _Wrapper(_llm())
    runner = types.SimpleNamespace(model=via_hook, cfg=None, logger=types.SimpleNamespace(info=lambda *_: None))
    hook.before_test(runner)

    via_model = _Wrapper(_llm())
    quantize_bevvlm(via_model, settings, calib=frames if settings.method == "gptq" else None)

    layer = _llm()
    quantize_model(layer, settings, calib_fn=_teacher_forced(layer, frames) if settings.method == "gptq" else None)

    expected = _quantised_state(layer)
    assert len(expected) >= 3 * 7 * CONFIG["num_hidden_layers"]
    for other in (via_hook.llm, via_model.llm):
        got = _quantised_state(other)
        assert got.keys() == expected.keys()
        assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert layer.lm.model.layers[0].mlp.gate_proj.group_size == settings.group_size_of("gate_proj")


def test_hook_checks_its_settings_when_built():
    from bevlm.registry import HOOKS

    with pytest.raises(ValueError, match="'lora_base' is now called 'keep_lora'"):
        HOOKS.build(dict(type="PostTrainingQuantHook", quant=dict(method="rtn", lora_base=True)))
    hook = HOOKS.build(dict(type="PostTrainingQuantHook", quant=dict(method="rtn", group_size=32,
                                                                     group_sizes={"gate_proj": 64})))
    assert hook.settings == RTNSettings(group_size=32, group_sizes={"gate_proj": 64})
    with pytest.raises(ValueError, match="calib_frames=0"):
        PostTrainingQuantHook(quant=dict(method="gptq"), calib_frames=0)


def test_model_level_takes_the_settings_once():
    with pytest.raises(ValueError, match="either as `settings` or as keyword arguments"):
        quantize_bevvlm(_Wrapper(_llm()), RTNSettings(), group_size=32)
    with pytest.raises(ValueError, match="no quant settings"):
        quantize_bevvlm(_Wrapper(_llm()))
    with pytest.raises(ValueError, match="needs calibration frames"):
        quantize_bevvlm(_Wrapper(_llm()), GPTQSettings())
    with pytest.raises(ValueError, match="calib_fn is only used by method='gptq'"):
        quantize_model(_llm(), RTNSettings(), calib_fn=lambda m: None)


def test_int8_dynamic_settings_per_tensor_and_layer_choice():
    llm = _llm()
    report = quantize_model(llm, Int8DynamicSettings(include=("q_proj", "v_proj"), per_channel=False))
    assert len(report.layers) == 2 * CONFIG["num_hidden_layers"] and report.bits == 8
    weight = llm.lm.model.layers[0].self_attn.q_proj.weight()
    assert weight.qscheme() == torch.per_tensor_affine

"""Residual-stream rotation before quantisation (bevlm.inference.quantization.rotation).

Properties: the Hadamard constructions are Hadamard matrices; the rotation is orthogonal and
reproducible from its seed; a rotated float model computes the same logits, greedy answers and FastV
scores (norm weights folded, Qwen2's biases kept); on a model whose residual stream carries an
outlier channel, int4 round-to-nearest of the rotated weights is closer to the float model than
of the plain ones; a rotated, quantised model saved and loaded gives the same logits; the unsupported
cases are refused before anything changes.
"""
import copy

import pytest
import torch

from bevlm.inference.quantization import load_quantized, quant_settings, quantize_model, save_quantized
from bevlm.inference.quantization.rotation import (hadamard_factors, hadamard_matrix, is_rotated, kron_matmul,
                                                   rotate_residual_, rotation_matrix)
from bevlm.models.llm import HFCausalLM
from bevlm.models.pruning import fastv_scores
from bevlm.testing import TINY_ARCH_CONFIGS, TINY_LLAMA_CONFIG

torch.set_num_threads(1)

QUESTION = "What are the important objects in the current scene?"


def _llm(config: dict = TINY_LLAMA_CONFIG, seed: int = 0) -> HFCausalLM:
    torch.manual_seed(seed)
    llm = HFCausalLM(tiny_config=dict(config, initializer_range=0.2)).eval()
    with torch.no_grad():  # norm gains away from 1, so that folding them matters
        for layer in llm.lm.model.layers:
            layer.input_layernorm.weight.uniform_(0.5, 2.0)
            layer.post_attention_layernorm.weight.uniform_(0.5, 2.0)
    return llm


def _ids(vocab: int = TINY_LLAMA_CONFIG["vocab_size"]) -> torch.Tensor:
    return torch.randint(4, vocab, (2, 24), generator=torch.Generator().manual_seed(7))


def _logits(llm: HFCausalLM, ids: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return llm.lm(input_ids=_ids() if ids is None else ids).logits


def _prefix(llm: HFCausalLM, seed: int = 1, n: int = 6) -> torch.Tensor:
    return torch.randn(1, n, llm.hidden_size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n", [1, 2, 12, 20, 48, 64, 576, 896, 960])
def test_hadamard_matrix_is_hadamard(n):
    h = hadamard_matrix(n)
    assert h is not None and h.shape == (n, n)
    assert bool((h.abs() == 1).all())
    assert torch.equal(h @ h.T, n * torch.eye(n, dtype=h.dtype))


@pytest.mark.parametrize("n", [12, 48, 576, 2048])
def test_kron_matmul_is_the_dense_product(n):
    factors = hadamard_factors(n)
    assert max(f.shape[0] for f in factors) <= 64 or n == 896
    h = hadamard_matrix(n)
    x = torch.randn(3, 5, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(kron_matmul(x, factors), x @ h)
    assert torch.allclose(kron_matmul(x, factors, transpose=True), x @ h.T)


def test_hadamard_rotation_keeps_only_factors_resident():
    llm = _llm(dict(TINY_LLAMA_CONFIG, hidden_size=48, num_attention_heads=4, num_key_value_heads=2))
    rotate_residual_(llm, "hadamard")
    buffers = {n: b for n, b in llm.lm.model.layers[0].named_buffers() if n.startswith("bevlm_rotation")}
    assert sorted(buffers) == ["bevlm_rotation_f0", "bevlm_rotation_f1", "bevlm_rotation_signs"]
    assert sum(b.numel() for b in buffers.values()) == 12 * 12 + 4 * 4 + 48  # not 48 * 48


@pytest.mark.parametrize("n", [3, 6, 7, 10])
def test_hadamard_matrix_none_where_not_built(n):
    assert hadamard_matrix(n) is None


@pytest.mark.parametrize("kind", ["hadamard", "orthogonal"])
def test_rotation_matrix_orthogonal_and_seeded(kind):
    q = rotation_matrix(48, kind, seed=3)
    assert torch.allclose(q @ q.T, torch.eye(48, dtype=q.dtype), atol=1e-12)
    assert torch.equal(q, rotation_matrix(48, kind, seed=3))
    assert not torch.equal(q, rotation_matrix(48, kind, seed=4))


def test_rotation_matrix_refusals():
    with pytest.raises(ValueError, match="no Hadamard matrix of order 7"):
        rotation_matrix(7, "hadamard")
    with pytest.raises(ValueError, match="not one of"):
        rotation_matrix(8, "givens")


@pytest.mark.parametrize("arch,kind,mlp", [("llama", "hadamard", False), ("llama", "orthogonal", False),
                                           ("qwen2", "hadamard", False), ("llama", "hadamard", True)])
def test_rotated_model_computes_the_same(arch, kind, mlp):
    config = TINY_LLAMA_CONFIG if arch == "llama" else TINY_ARCH_CONFIGS[arch]
    llm = _llm(config)
    ids = _ids(config["vocab_size"])
    ref = _logits(llm, ids)
    prefix = _prefix(llm)
    ref_answer = llm.generate_ids(llm.prefill(prefix), QUESTION, max_new_tokens=12)
    table = llm.lm.get_input_embeddings().weight.detach().clone()
    rotate_residual_(llm, kind, seed=5, mlp=mlp)
    assert is_rotated(llm)
    assert torch.allclose(_logits(llm, ids), ref, atol=2e-5, rtol=1e-4)
    assert llm.generate_ids(llm.prefill(prefix), QUESTION, max_new_tokens=12) == ref_answer
    # the embedding table (and a tied head) is left as it was; the norms now have unit gain
    assert torch.equal(llm.lm.get_input_embeddings().weight, table)
    assert all(bool((layer.input_layernorm.weight == 1).all()) for layer in llm.lm.model.layers)


def test_rotated_model_deep_copies_and_casts():
    llm = _llm()
    ref = _logits(llm)
    rotate_residual_(llm, "hadamard", seed=1)
    twin = copy.deepcopy(llm)
    assert is_rotated(twin)
    layer0, norm = twin.lm.model.layers[0], twin.lm.model.norm
    assert layer0.bevlm_rotation_signs is norm.bevlm_rotation_signs  # one shared tensor, the copy's own
    assert layer0.bevlm_rotation_signs is not llm.lm.model.layers[0].bevlm_rotation_signs
    assert "bevlm_rotation" not in "".join(twin.state_dict())
    assert torch.allclose(_logits(twin), ref, atol=2e-5, rtol=1e-4)
    twin.lm.to(torch.bfloat16)
    with torch.no_grad():
        low = twin.lm(input_ids=_ids()).logits.float()
    assert float((low - ref).abs().max()) < 0.1 * float(ref.abs().max())


def test_rotated_model_keeps_fastv_scores():
    llm = _llm(dict(TINY_LLAMA_CONFIG, num_hidden_layers=3))
    prefix = _prefix(llm, n=12)
    ref = fastv_scores(llm, prefix, (0, 9), layer=2)
    rotate_residual_(llm, "hadamard")
    assert torch.allclose(fastv_scores(llm, prefix, (0, 9), layer=2), ref, atol=1e-6)


def _outlier_llm() -> HFCausalLM:
    """A tiny Llama whose residual stream carries two channels ~30x larger than the rest (as
    SmolLM2's does): every reader's columns there multiply large activations."""
    llm = _llm(dict(TINY_LLAMA_CONFIG, hidden_size=128, intermediate_size=256))
    with torch.no_grad():
        llm.lm.get_input_embeddings().weight[:, :2] *= 30.0
        for layer in llm.lm.model.layers:
            layer.input_layernorm.weight[:2] = 8.0
            layer.post_attention_layernorm.weight[:2] = 8.0
    return llm


def test_mlp_rotation_keeps_the_linear_selected_under_its_name():
    from bevlm.inference.quantization import QuantLinear4
    from bevlm.inference.quantization.rotation import RotatedInput

    llm = _outlier_llm()
    report = quantize_model(llm, dict(method="rtn", group_size=32, rotation="hadamard", rotation_mlp=True,
                                      group_sizes={"down_proj": 64}))
    down = llm.lm.model.layers[1].mlp.down_proj
    assert isinstance(down, RotatedInput) and isinstance(down.down_proj, QuantLinear4)
    assert down.down_proj.group_size == 64
    assert "model.model.layers.1.mlp.down_proj.down_proj" in report.layers
    assert len(report.layers) == 7 * TINY_LLAMA_CONFIG["num_hidden_layers"]
    other = llm.lm.model.layers[0].mlp.down_proj  # the layers share one set of rotation buffers
    assert other.bevlm_rotation_signs is down.bevlm_rotation_signs


def test_rotation_lowers_rtn_error_with_outlier_channels():
    ref = _logits(_outlier_llm())
    errors = {}
    for rotation in (None, "hadamard"):
        llm = _outlier_llm()
        quantize_model(llm, dict(method="rtn", group_size=32, rotation=rotation))
        errors[rotation] = float((_logits(llm) - ref).pow(2).mean())
    assert errors["hadamard"] < 0.5 * errors[None], errors


@pytest.mark.parametrize("mlp", [False, True])
def test_rotated_quantised_model_saves_and_loads(tmp_path, mlp):
    llm = _outlier_llm()
    settings = dict(method="rtn", group_size=32, rotation="hadamard", rotation_seed=2, embeddings=True,
                    rotation_mlp=mlp)
    quantize_model(llm, settings)
    expected = _logits(llm)
    path = str(tmp_path / "rot.safetensors")
    save_quantized(llm, path, settings=settings)
    skeleton = _llm(dict(TINY_LLAMA_CONFIG, hidden_size=128, intermediate_size=256), seed=9)
    load_quantized(skeleton, path)
    assert is_rotated(skeleton)
    assert torch.allclose(_logits(skeleton), expected, atol=1e-5)


@pytest.mark.parametrize("kernel", ["dequant", "auto"])
def test_rotated_int4_without_float_copies_computes_as_the_cached_kernel(kernel):
    """The MLP-rotated int4 model through the kernels that keep no float copy of a layer ('dequant':
    a shared workspace; 'auto': torch's packed int4 matmul where it wins): the same logits as the
    cached kernel, and resident weights of the Linears the packed codes (no fp32 buffer beside them)."""
    from bevlm.inference.quantization import QuantLinear4

    settings = dict(method="rtn", group_size=32, rotation="hadamard", rotation_mlp=True)
    cached, lean = _outlier_llm(), _outlier_llm()
    quantize_model(cached, dict(settings, kernel="cached"))
    quantize_model(lean, dict(settings, kernel=kernel))
    assert torch.allclose(_logits(lean), _logits(cached), atol=1e-3, rtol=1e-3)
    layers = [m for m in lean.modules() if isinstance(m, QuantLinear4)]
    assert layers and len(layers) == 7 * TINY_LLAMA_CONFIG["num_hidden_layers"]
    for m in layers:  # codes, scales and any run-time copy (the native kernel's repacked codes) under two
        # bytes per weight: less than an fp16 copy alone (the cached kernel's fp32 copy is 4)
        assert m.runtime_bytes() < 2 * m.in_features * m.out_features, (m, m.runtime_bytes())
    cached_layer = next(m for m in cached.modules() if isinstance(m, QuantLinear4))
    assert cached_layer.runtime_bytes() > 4 * cached_layer.in_features * cached_layer.out_features  # the check bites


def test_rotation_refusals():
    with pytest.raises(ValueError, match="keep_lora"):
        quant_settings(dict(method="gptq", rotation="hadamard", keep_lora=True))
    with pytest.raises(ValueError, match="rotation_mlp=True applies a Hadamard"):
        quant_settings(dict(method="rtn", rotation="orthogonal", rotation_mlp=True))
    with pytest.raises(ValueError, match="rotation='diagonal' is not one of"):
        quant_settings(dict(method="rtn", rotation="diagonal"))
    llm = _llm()
    rotate_residual_(llm)
    with pytest.raises(ValueError, match="rotated already"):
        rotate_residual_(llm)
    torch.manual_seed(0)
    phi = HFCausalLM(tiny_config=TINY_ARCH_CONFIGS["phi"]).eval()
    before = {k: v.clone() for k, v in phi.state_dict().items()}
    with pytest.raises(ValueError, match="model_type 'phi' is not supported"):
        rotate_residual_(phi)
    assert all(torch.equal(v, before[k]) for k, v in phi.state_dict().items())
    lora = HFCausalLM(tiny_config=TINY_LLAMA_CONFIG, lora=dict(r=4, alpha=8)).eval()
    with pytest.raises(ValueError, match="merge LoRA"):
        rotate_residual_(lora)

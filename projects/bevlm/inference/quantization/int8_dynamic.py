"""Int8 dynamic quantisation of Linear layers through ``torch.ao`` (fbgemm / x86).

Weights are stored as int8 (per output channel by default); activations are
quantised to uint8 on the fly per call (Jacob et al., 2018, "Quantization and
Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference",
arXiv 1712.05877, dynamic variant). On AVX2/AVX-512 CPUs the fbgemm int8 GEMM
is the fast path for batch-1 decode, unlike PyTorch's int4 CPU kernels.
``torch.ao.quantization`` is deprecated upstream (torchao replaces it) but
still ships; its deprecation warnings are silenced here, in one place.

Accuracy caveat: activations get one (7-bit-range) scale per tensor, so
layers with activation outliers suffer (Dettmers et al., 2022, "LLM.int8()",
arXiv 2208.07339). On SmolLM2-135M, int8 on ``down_proj`` ruins the logits
(next-token top-1 agreement 0.42); leave ``down_proj`` out of ``include``.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn


def _ao():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*")
        from torch.ao import quantization
        from torch.ao.nn.quantized import dynamic
    return quantization, dynamic


def int8_dynamic_available() -> bool:
    """True when a CPU int8 GEMM engine (fbgemm/x86/qnnpack/onednn) is compiled in."""
    engines = set(torch.backends.quantized.supported_engines) - {"none"}
    return bool(engines)


def is_int8_dynamic_linear(module: nn.Module) -> bool:
    """Whether ``module`` is a ``torch.ao`` dynamically quantised Linear."""
    _, dynamic = _ao()
    return isinstance(module, dynamic.Linear)


def quantize_int8_dynamic_(module: nn.Module, names: list[str], per_channel: bool = True) -> None:
    """Replace the named ``nn.Linear`` submodules of ``module`` by int8 dynamic ones, in place.

    Args:
        module: the model (CPU, float32).
        names: dotted names of ``nn.Linear`` submodules.
        per_channel: one int8 scale per output channel (more accurate than per
            tensor at the same speed).
    """
    if not int8_dynamic_available():
        raise RuntimeError("int8_dynamic: this PyTorch build has no quantized CPU engine "
                           f"(supported_engines={torch.backends.quantized.supported_engines}); use method='rtn'")
    for name in names:
        layer = module.get_submodule(name)
        if type(layer) is not nn.Linear:
            raise TypeError(f"int8_dynamic: {name} is {type(layer).__name__}, not nn.Linear")
        if layer.weight.device.type != "cpu":
            raise RuntimeError(f"int8_dynamic: {name} is on {layer.weight.device}; the int8 dynamic kernels are "
                               "CPU-only (move the model to CPU or use method='rtn'/'gptq')")
    quantization, _ = _ao()
    qconfig = quantization.per_channel_dynamic_qconfig if per_channel else quantization.default_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        quantization.quantize_dynamic(module, qconfig_spec={n: qconfig for n in names}, dtype=torch.qint8,
                                      inplace=True)


def int8_dynamic_bytes(layer: nn.Module) -> int:
    """Bytes of a dynamic int8 Linear: int8 weight, its scales/zero points, bias."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        weight, bias = layer.weight(), layer.bias()
    total = weight.numel()  # int8 codes
    if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        total += weight.q_per_channel_scales().numel() * 8 + weight.q_per_channel_zero_points().numel() * 8
    else:
        total += 16  # one float64 scale + one int64 zero point
    if bias is not None:
        total += bias.numel() * bias.element_size()
    return total

"""``QuantLinear4``: a Linear layer stored as packed 4-bit group-quantised codes."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from . import kernels
from .int4 import check_group_size, check_zero_point, dequantize, pack_int4, quantize_rtn, unpack_int4

KERNELS = ("dequant", "native", "auto", "cached")


class QuantLinear4(nn.Module):
    """Weight-only int4 linear layer (group-wise asymmetric, fp16 scales/zeros).

    Stored buffers (all in ``state_dict``): ``qweight`` uint8 ``[out, in // 2]``
    (two codes per byte), ``scales`` and ``zeros`` fp16 ``[out, in // g]``, and
    ``bias`` (float, or None). The weight is ``(q - zero) * scale`` per group, or
    ``q * scale + offset`` with ``zero_point='offset'`` (``zeros`` holds the offsets).

    Args:
        in_features: input size; a multiple of ``group_size`` (and even).
        out_features: output size.
        bias: whether the layer has a bias.
        group_size: input columns per scale/zero group.
        kernel: ``'dequant'`` (dequantise once per forward + dense matmul;
            correct everywhere), ``'native'`` (PyTorch's CPU int4pack matmul;
            error if unavailable or not matching ``'dequant'``) or ``'auto'``
            (the fastest correct one by a one-time micro-benchmark, chosen
            separately for decode-sized and prefill-sized inputs), or
            ``'cached'`` (dequantise once, keep the float weight: the same
            numbers as ``'dequant'`` at dense-matmul speed, for measuring the
            accuracy of the int4 codes where the int4 kernels are slow; the
            stored bytes stay packed, the runtime copy is counted by
            :meth:`runtime_bytes`).
        method: how the codes were obtained (``'rtn'`` or ``'gptq'``);
            descriptive, saved with the layer by ``save_quantized``.
        zero_point: ``'int'`` or ``'offset'`` (see :mod:`.int4`).
        input_scale: keep a per-input-channel ``input_scale`` buffer (fp32 ``[in]``): the input is
            multiplied by it before the matmul (AWQ: the codes hold ``W diag(s)``, the buffer ``1 / s``).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, group_size: int = 128,
                 kernel: str = "auto", method: str = "rtn", zero_point: str = "int",
                 input_scale: bool = False) -> None:
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"QuantLinear4: kernel={kernel!r} is not one of {KERNELS}")
        check_group_size(in_features, group_size, "QuantLinear4")
        check_zero_point(zero_point, "QuantLinear4")
        self.zero_point = zero_point
        if in_features % 2:
            raise ValueError(f"QuantLinear4: in_features={in_features} must be even to pack two codes per byte")
        self.in_features, self.out_features = in_features, out_features
        self.group_size, self.kernel, self.method = group_size, kernel, method
        n_groups = in_features // group_size
        self.register_buffer("qweight", torch.zeros(out_features, in_features // 2, dtype=torch.uint8))
        self.register_buffer("scales", torch.ones(out_features, n_groups, dtype=torch.float16))
        self.register_buffer("zeros", torch.zeros(out_features, n_groups, dtype=torch.float16))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.register_buffer("input_scale", torch.ones(in_features) if input_scale else None)
        self._reset_runtime()

    # ------------------------------------------------------------ construction
    @classmethod
    def from_codes(cls, q: Tensor, scales: Tensor, zeros: Tensor, bias: Tensor | None, group_size: int,
                   kernel: str = "auto", method: str = "rtn", zero_point: str = "int",
                   input_scale: Tensor | None = None) -> "QuantLinear4":
        """Build from unpacked codes ``q`` uint8 ``[out, in]`` and ``[out, G]`` scales/zeros
        (``input_scale`` ``[in]``: multiplies the input, see the class docstring)."""
        out_features, in_features = q.shape
        layer = cls(in_features, out_features, bias is not None, group_size, kernel, method, zero_point,
                    input_scale is not None)
        if input_scale is not None:
            layer.input_scale.copy_(input_scale.detach().float())
        layer.qweight.copy_(pack_int4(q.to(torch.uint8)))
        layer.scales.copy_(scales.to(torch.float16))
        layer.zeros.copy_(zeros.to(torch.float16))
        if bias is not None:
            layer.bias = bias.detach().float().clone()
        return layer.to(q.device)

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = 128, kernel: str = "auto",
                    clip_search: int = 0, zero_point: str = "int") -> "QuantLinear4":
        """Round-to-nearest quantisation of an ``nn.Linear`` (``clip_search``: see ``group_params``)."""
        q, scales, zeros = quantize_rtn(linear.weight.detach(), group_size, bits=4, clip_search=clip_search,
                                        zero_point=zero_point)
        return cls.from_codes(q, scales, zeros, linear.bias, group_size, kernel, zero_point=zero_point)

    # ----------------------------------------------------------------- queries
    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The dequantised weight ``[out, in]`` as the layer applies it (``input_scale`` folded in)."""
        w = dequantize(unpack_int4(self.qweight), self.scales, self.zeros, self.group_size, dtype, self.zero_point)
        return w if self.input_scale is None else w * self.input_scale.to(dtype)

    def weight_bytes(self) -> int:
        """Bytes of the stored tensors (packed codes, scales, zeros, bias)."""
        tensors = [self.qweight, self.scales, self.zeros] + [t for t in (self.bias, self.input_scale) if t is not None]
        return sum(t.numel() * t.element_size() for t in tensors)

    def runtime_bytes(self) -> int:
        """:meth:`weight_bytes` plus the native kernel's repacked copy, if one was built."""
        extra = 0 if self._native is None else sum(t.numel() * t.element_size() for t in self._native)
        if self._cached is not None:
            extra += self._cached.numel() * self._cached.element_size()
        return self.weight_bytes() + extra

    def read_bytes(self, regime: str = "decode") -> int:
        """Weight bytes one forward streams from memory in ``regime`` (``'decode'`` / ``'prefill'``):
        the float copy for ``'cached'``, the repacked codes for ``'native'``, the packed codes (and
        group parameters) for ``'dequant'``; the bias in every case. Before the first forward: the
        stored bytes."""
        bias = 0 if self.bias is None else self.bias.numel() * self.bias.element_size()
        kernel = None if self._choice is None else self._choice[regime]
        if kernel == "cached":
            return self._cached.numel() * self._cached.element_size() + bias
        if kernel == "native":
            return sum(t.numel() * t.element_size() for t in self._native) + bias
        return self.weight_bytes()

    @property
    def resolved_kernels(self) -> dict[str, str] | None:
        """``{'decode': k, 'prefill': k}`` chosen at the first forward (None before it)."""
        return None if self._choice is None else dict(self._choice)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"bits=4, group_size={self.group_size}, zero_point={self.zero_point}, kernel={self.kernel}, "
                f"method={self.method}" + (", input_scale" if self.input_scale is not None else ""))

    # ----------------------------------------------------------------- runtime
    def _reset_runtime(self) -> None:
        self._prepared_for: tuple | None = None
        self._native: tuple[Tensor, Tensor] | None = None
        self._choice: dict[str, str] | None = None
        self._cached: Tensor | None = None

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # noqa: D401 - nn.Module hook signature
        super()._load_from_state_dict(*args, **kwargs)
        self._reset_runtime()  # new codes: rebuild the native copy and re-check it

    def _apply(self, fn, *args, **kwargs):  # .to()/.cuda(): the native copy is device-specific
        self._reset_runtime()
        return super()._apply(fn, *args, **kwargs)

    def _dequant(self, x: Tensor) -> Tensor:
        return kernels.dequant_linear(x, self.qweight, self.scales, self.zeros, self.bias, self.group_size,
                                      self.zero_point)

    def _native_call(self, x: Tensor) -> Tensor:
        packed, scale_and_zero = self._native
        return kernels.native_linear(x, packed, scale_and_zero, self.bias, self.group_size, self.out_features)

    def prepare(self, device: torch.device, dtype: torch.dtype) -> dict[str, str]:
        """Resolve the kernel for inputs of ``dtype`` on ``device`` (done once, lazily).

        Returns:
            ``{'decode': k, 'prefill': k}`` with ``k`` in ``('dequant', 'native', 'cached')``.
        """
        self._reset_runtime()
        if self.kernel == "cached":
            self._cached = dequantize(unpack_int4(self.qweight), self.scales, self.zeros, self.group_size, dtype,
                                      self.zero_point).to(device)  # [out, in] (the input is scaled apart)
            self._choice = {"decode": "cached", "prefill": "cached"}
            self._prepared_for = (device, dtype)
            return dict(self._choice)
        native_ok = False
        if self.kernel != "dequant" and kernels.native_int4_available(device, self.group_size, self.in_features):
            try:
                self._native = kernels.pack_native(self.qweight, self.scales, self.zeros, dtype, self.zero_point)
            except RuntimeError:
                self._native = None
            native_ok = self._native is not None and kernels.native_matches(
                self._dequant, self._native_call, self.in_features, dtype)
            if not native_ok:
                self._native = None
        if self.kernel == "native" and not native_ok:
            raise RuntimeError(f"QuantLinear4(kernel='native'): torch's int4pack kernel is unavailable or does not "
                               f"match the dequant kernel for {device}/{dtype}, group_size={self.group_size}; "
                               "use kernel='auto' (falls back) or 'dequant'")
        if self.kernel == "dequant" or not native_ok:
            self._choice = {"decode": "dequant", "prefill": "dequant"}
        elif self.kernel == "native":
            self._choice = {"decode": "native", "prefill": "native"}
        else:
            key = (self.out_features, self.in_features, self.group_size, dtype, device.type)
            self._choice = kernels.choose_kernels(
                key, {"dequant": self._dequant, "native": self._native_call}, self.in_features, dtype)
            if "native" not in self._choice.values():
                self._native = None  # do not keep an unused copy
        self._prepared_for = (device, dtype)
        return dict(self._choice)

    def forward(self, x: Tensor) -> Tensor:
        """``x @ W_hat^T + bias`` for ``x`` ``[..., in]``; returns ``[..., out]``."""
        if x.shape[-1] != self.in_features:
            raise ValueError(f"QuantLinear4: input last dim {x.shape[-1]} != in_features {self.in_features}")
        if self._prepared_for != (x.device, x.dtype):
            with torch.no_grad():
                self.prepare(x.device, x.dtype)
        if self.input_scale is not None:
            x = x * self.input_scale.to(x.dtype)
        rows = x.numel() // self.in_features
        regime = "decode" if rows <= kernels.DECODE_MAX_ROWS else "prefill"
        if self._choice[regime] == "native":
            return self._native_call(x)
        if self._choice[regime] == "cached":
            return nn.functional.linear(x, self._cached, None if self.bias is None else self.bias.to(x.dtype))
        return self._dequant(x)

"""``QuantEmbedding8``: a token-embedding table in int8, symmetric per group (llama.cpp's Q8_0).

Row ``i`` of the table is ``q_i * scale_i`` per group of ``g`` columns, ``q`` an int8 in
``-127 .. 127`` and one fp16 scale per group (8.5 bits per weight at ``g = 32``). SmolLM2's
shipped file stores its tied embedding exactly so (Q8_0, blocks of 32), so quantising the loaded
table at group 32 gives back the shipped values. :meth:`QuantEmbedding8.tied_head` is the tied
LM head over the same tensors (stored once); it computes with a dequantised copy, like the int4
``'cached'`` kernel.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from . import kernels
from .int4 import check_group_size, fp16_scale_round_up


def quantize_int8_groups(w: Tensor, group_size: int) -> tuple[Tensor, Tensor]:
    """Symmetric int8 codes ``[out, in]`` and fp16 scales ``[out, in // g]`` of ``w``.

    The scale ``max|w| / 127`` of each group is rounded UP to fp16, so every element is within
    ``scale / 2`` of ``q * scale``.
    """
    out_features, in_features = w.shape
    check_group_size(in_features, group_size, "quantize_int8_groups")
    groups = w.detach().float().reshape(out_features, in_features // group_size, group_size)  # [out, G, g]
    scale16 = fp16_scale_round_up(groups.abs().amax(dim=-1) / 127.0)  # [out, G]
    q = torch.clamp(torch.round(groups / scale16.float()[..., None]), -127, 127).to(torch.int8)
    return q.reshape(out_features, in_features), scale16


def dequantize_int8_groups(q: Tensor, scales: Tensor, group_size: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``q * scale`` per group: ``[out, in]`` in ``dtype``."""
    out_features, in_features = q.shape
    w = q.reshape(out_features, in_features // group_size, group_size).to(dtype) * scales.to(dtype)[..., None]
    return w.reshape(out_features, in_features)


def dequant_int8_into(q: Tensor, scales: Tensor, group_size: int, out: Tensor) -> None:
    """Write :func:`dequantize_int8_groups` of ``q`` ``[rows, in]`` into ``out`` (same dtype ops)."""
    rows, in_features = q.shape
    out.copy_(q)
    out.view(rows, in_features // group_size, group_size).mul_(scales.to(out.dtype)[..., None])


class QuantEmbedding8(nn.Module):
    """Embedding lookup from int8 codes with fp16 group scales.

    Buffers: ``qweight`` int8 ``[V, D]``, ``scales`` fp16 ``[V, D // g]``.

    Args:
        num_embeddings, embedding_dim: table shape (``D`` a multiple of ``group_size``).
        group_size: columns per scale.
        dtype: dtype of the looked-up embeddings.
        method: descriptive (saved with the model).
    """

    bits = 8

    def __init__(self, num_embeddings: int, embedding_dim: int, group_size: int = 32,
                 dtype: torch.dtype = torch.float32, method: str = "rtn") -> None:
        super().__init__()
        check_group_size(embedding_dim, group_size, "QuantEmbedding8")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.group_size, self.dtype, self.method = group_size, dtype, method
        self.register_buffer("qweight", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8))
        self.register_buffer("scales", torch.ones(num_embeddings, embedding_dim // group_size, dtype=torch.float16))

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, group_size: int = 32) -> "QuantEmbedding8":
        """Round-to-nearest int8 of an ``nn.Embedding``'s table."""
        weight = embedding.weight.detach()
        q, scales = quantize_int8_groups(weight, group_size)
        layer = cls(weight.shape[0], weight.shape[1], group_size, weight.dtype)
        layer.qweight.copy_(q)
        layer.scales.copy_(scales)
        return layer.to(weight.device)

    def dequantized_weight(self, dtype: torch.dtype | None = None) -> Tensor:
        """The whole dequantised table ``[V, D]``."""
        return dequantize_int8_groups(self.qweight, self.scales, self.group_size, dtype or self.dtype)

    def weight_bytes(self) -> int:
        """Bytes of the stored codes and scales."""
        return sum(t.numel() * t.element_size() for t in (self.qweight, self.scales))

    def forward(self, input_ids: Tensor) -> Tensor:
        """Embeddings ``[..., D]`` of ``input_ids`` ``[...]``; dequantises only the gathered rows."""
        flat = input_ids.reshape(-1)
        rows = dequantize_int8_groups(self.qweight[flat], self.scales[flat], self.group_size, self.dtype)  # [N, D]
        return rows.reshape(*input_ids.shape, self.embedding_dim)

    def tied_head(self, kernel: str = "cached") -> "TiedInt8Head":
        """The bias-free ``D -> V`` LM head over this table's tensors (stored once); ``kernel``
        ``'dequant'`` dequantises per call (no resident float copy), any other value keeps one."""
        return TiedInt8Head(self, kernel="dequant" if kernel == "dequant" else "cached")

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, bits=8, group_size={self.group_size}, method={self.method}"


class TiedInt8Head(nn.Module):
    """LM head ``x @ table^T`` of a :class:`QuantEmbedding8`; its ``qweight`` / ``scales`` buffers
    ARE the table's. ``kernel='cached'`` computes with a dequantised copy in the input dtype (built
    once per dtype, held resident); ``'dequant'`` dequantises for each call, in row blocks through
    the shared workspace of :mod:`.kernels` (no float copy of the table is kept or allocated)."""

    def __init__(self, table: QuantEmbedding8, kernel: str = "cached") -> None:
        super().__init__()
        if kernel not in ("cached", "dequant"):
            raise ValueError(f"TiedInt8Head: kernel={kernel!r} is not 'cached' or 'dequant'")
        self.in_features, self.out_features = table.embedding_dim, table.num_embeddings
        self.group_size, self.kernel = table.group_size, kernel
        self.register_buffer("qweight", table.qweight)
        self.register_buffer("scales", table.scales)
        self._cached: Tensor | None = None

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # noqa: D401 - nn.Module hook signature
        super()._load_from_state_dict(*args, **kwargs)
        self._cached = None

    def _apply(self, fn, *args, **kwargs):
        self._cached = None
        return super()._apply(fn, *args, **kwargs)

    def weight_bytes(self) -> int:
        """Bytes of the stored codes and scales (the table's own tensors)."""
        return sum(t.numel() * t.element_size() for t in (self.qweight, self.scales))

    def runtime_bytes(self) -> int:
        """:meth:`weight_bytes` plus the float copy of ``kernel='cached'``, once built."""
        return self.weight_bytes() + (0 if self._cached is None else self._cached.numel() * self._cached.element_size())

    def read_bytes(self, regime: str = "decode") -> int:
        """Bytes one forward streams: the float copy (cached) or the codes and scales (dequant)."""
        if self._cached is not None:
            return self._cached.numel() * self._cached.element_size()
        return self.weight_bytes()

    def forward(self, x: Tensor) -> Tensor:
        if self.kernel == "dequant":
            if torch.is_grad_enabled() and x.requires_grad:  # autograd keeps the weight: its own copy
                return F.linear(x, dequantize_int8_groups(self.qweight, self.scales, self.group_size, x.dtype))

            def fill(r0: int, r1: int, block: Tensor) -> None:  # rows of the table into the shared workspace
                dequant_int8_into(self.qweight[r0:r1], self.scales[r0:r1], self.group_size, block)
            return kernels.blocked_linear(x, self.out_features, None, fill)
        if self._cached is None or self._cached.dtype != x.dtype or self._cached.device != x.device:
            self._cached = dequantize_int8_groups(self.qweight, self.scales, self.group_size, x.dtype).to(x.device)
        return F.linear(x, self._cached)

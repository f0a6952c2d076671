"""``QuantEmbedding4``: a token-embedding table stored as packed 4-bit group-quantised codes.

Small LLMs spend a large share of their bytes on the vocabulary: SmolLM2-135M's tied 49152 x 576
embedding is 28.3M of its 134.5M parameters, so quantising only the Linears leaves the model at
0.6x of its fp16 bytes. The table is quantised like a Linear weight (groups along the hidden
dimension, fp16 scales/zeros); a lookup dequantises only the rows it gathers. When the LM head is
tied to the embedding, :meth:`QuantEmbedding4.tied_head` returns a :class:`QuantLinear4` that
shares the same code/scale/zero tensors, so the table is stored once, as in the float model.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .int4 import check_group_size, check_zero_point, dequantize, pack_int4, quantize_rtn, unpack_int4
from .quant_linear import QuantLinear4


class QuantEmbedding4(nn.Module):
    """Embedding lookup from packed int4 codes (group-wise asymmetric, fp16 scales/zeros).

    Buffers: ``qweight`` uint8 ``[V, D // 2]``, ``scales`` / ``zeros`` fp16 ``[V, D // g]``. Row
    ``i`` of the table is ``(q_i - zero_i) * scale_i`` per group of ``g`` columns.

    Args:
        num_embeddings: vocabulary size V.
        embedding_dim: width D; a multiple of ``group_size`` (and even).
        group_size: columns per scale/zero group.
        dtype: dtype of the looked-up embeddings (the float model's).
        method: how the codes were obtained (descriptive, saved with the model).
        zero_point: ``'int'`` or ``'offset'`` (see :mod:`.int4`).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, group_size: int = 64,
                 dtype: torch.dtype = torch.float32, method: str = "rtn", zero_point: str = "int") -> None:
        super().__init__()
        check_group_size(embedding_dim, group_size, "QuantEmbedding4")
        check_zero_point(zero_point, "QuantEmbedding4")
        self.zero_point = zero_point
        if embedding_dim % 2:
            raise ValueError(f"QuantEmbedding4: embedding_dim={embedding_dim} must be even to pack two codes per byte")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.group_size, self.dtype, self.method = group_size, dtype, method
        groups = embedding_dim // group_size
        self.register_buffer("qweight", torch.zeros(num_embeddings, embedding_dim // 2, dtype=torch.uint8))
        self.register_buffer("scales", torch.ones(num_embeddings, groups, dtype=torch.float16))
        self.register_buffer("zeros", torch.zeros(num_embeddings, groups, dtype=torch.float16))

    @classmethod
    def from_codes(cls, q: Tensor, scales: Tensor, zeros: Tensor, group_size: int,
                   dtype: torch.dtype = torch.float32, method: str = "rtn",
                   zero_point: str = "int") -> "QuantEmbedding4":
        """Build from unpacked codes ``q`` uint8 ``[V, D]`` and ``[V, D // g]`` scales/zeros
        (e.g. GPTQ of the tied LM head, whose weight is this table)."""
        layer = cls(q.shape[0], q.shape[1], group_size, dtype, method, zero_point)
        layer.qweight.copy_(pack_int4(q.to(torch.uint8)))
        layer.scales.copy_(scales.to(torch.float16))
        layer.zeros.copy_(zeros.to(torch.float16))
        return layer.to(q.device)

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, group_size: int = 64, clip_search: int = 0,
                       zero_point: str = "int") -> "QuantEmbedding4":
        """Round-to-nearest quantisation of an ``nn.Embedding`` (its padding row is quantised too;
        ``clip_search``: see ``group_params``)."""
        weight = embedding.weight.detach()
        q, scales, zeros = quantize_rtn(weight, group_size, bits=4, clip_search=clip_search, zero_point=zero_point)
        layer = cls(weight.shape[0], weight.shape[1], group_size, weight.dtype, zero_point=zero_point)
        layer.qweight.copy_(pack_int4(q.to(torch.uint8)))
        layer.scales.copy_(scales.to(torch.float16))
        layer.zeros.copy_(zeros.to(torch.float16))
        return layer.to(weight.device)

    def dequantized_weight(self, dtype: torch.dtype | None = None) -> Tensor:
        """The whole dequantised table ``[V, D]``."""
        return dequantize(unpack_int4(self.qweight), self.scales, self.zeros, self.group_size, dtype or self.dtype,
                          self.zero_point)

    def weight_bytes(self) -> int:
        """Bytes of the stored codes, scales and zeros."""
        return sum(t.numel() * t.element_size() for t in (self.qweight, self.scales, self.zeros))

    def forward(self, input_ids: Tensor) -> Tensor:
        """Embeddings ``[..., D]`` of ``input_ids`` ``[...]``; dequantises only the gathered rows."""
        flat = input_ids.reshape(-1)
        rows = dequantize(unpack_int4(self.qweight[flat]), self.scales[flat], self.zeros[flat], self.group_size,
                          self.dtype, self.zero_point)                                 # [N, D]
        return rows.reshape(*input_ids.shape, self.embedding_dim)

    def tied_head(self, kernel: str = "cached") -> QuantLinear4:
        """A bias-free ``D -> V`` :class:`QuantLinear4` whose codes, scales and zeros ARE this
        table's tensors (the tied LM head; stored once)."""
        head = QuantLinear4(self.embedding_dim, self.num_embeddings, bias=False, group_size=self.group_size,
                            kernel=kernel, method=self.method, zero_point=self.zero_point)
        head = head.to(self.qweight.device)
        for name in ("qweight", "scales", "zeros"):
            head._buffers[name] = self._buffers[name]
        return head

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.embedding_dim}, bits=4, group_size={self.group_size}, "
                f"zero_point={self.zero_point}, method={self.method}")


def is_tied(embedding: nn.Module, head: nn.Module | None) -> bool:
    """Whether ``head`` (an ``nn.Linear``) uses the same weight tensor as ``embedding``."""
    w_in, w_out = getattr(embedding, "weight", None), getattr(head, "weight", None)
    return (isinstance(w_in, Tensor) and isinstance(w_out, Tensor)
            and w_in.untyped_storage().data_ptr() == w_out.untyped_storage().data_ptr()
            and w_in.shape == w_out.shape)


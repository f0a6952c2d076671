"""``QuantEmbedding4``: a token-embedding table stored as packed 4-bit group-quantised codes.

Small LLMs spend a large share of their bytes on the vocabulary: SmolLM2-135M's tied 49152 x 576
embedding is 28.3M of its 134.5M parameters, so quantising only the Linears leaves the model at
0.6x of its fp16 bytes. The table is quantised like a Linear weight (groups along the hidden
dimension, fp16 scales/zeros); a lookup dequantises only the rows it gathers. When the LM head is
tied to the embedding, :meth:`QuantEmbedding4.tied_head` returns a :class:`QuantLinear4` that
shares the same code/scale/zero tensors, so the table is stored once, as in the float model.

Optionally a few rows (``precise_rows``: e.g. the tokens a domain's text uses, chosen on calibration
text) are also kept in int8 (Q8_0 groups of 32, 8.5 bits per weight): their lookups and, through
:class:`TiedRowsHead`, their logits come from the int8 rows. 1000 rows of SmolLM2's table cost 0.6 MB.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .int4 import check_group_size, check_zero_point, dequantize, pack_int4, quantize_rtn, unpack_int4
from .quant_embedding8 import dequantize_int8_groups, quantize_int8_groups
from .quant_linear import QuantLinear4

#: Group size of the int8 precise rows (llama.cpp's Q8_0 blocks).
ROW_GROUP = 32


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
        precise_rows: number K of rows also kept in int8 (buffers ``row_ids`` int64 ``[K]``, sorted,
            ``row_qweight`` int8 ``[K, D]``, ``row_scales`` fp16 ``[K, D // 32]``; set by
            :meth:`set_precise_rows`); 0: none.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, group_size: int = 64,
                 dtype: torch.dtype = torch.float32, method: str = "rtn", zero_point: str = "int",
                 precise_rows: int = 0) -> None:
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
        self.precise_rows = int(precise_rows)
        if self.precise_rows:
            check_group_size(embedding_dim, ROW_GROUP, "QuantEmbedding4(precise_rows)")
            if not 0 < self.precise_rows <= num_embeddings:
                raise ValueError(f"QuantEmbedding4: precise_rows={precise_rows} must be in 1..{num_embeddings}")
            self.register_buffer("row_ids", torch.arange(self.precise_rows, dtype=torch.int64))
            self.register_buffer("row_qweight", torch.zeros(self.precise_rows, embedding_dim, dtype=torch.int8))
            self.register_buffer("row_scales", torch.ones(self.precise_rows, embedding_dim // ROW_GROUP,
                                                          dtype=torch.float16))

    def set_precise_rows(self, row_ids: Tensor, float_rows: Tensor) -> None:
        """Keep rows ``row_ids`` ``[K]`` (distinct token ids) in int8, from their float values
        ``float_rows`` ``[K, D]`` (e.g. the float table's rows before quantisation)."""
        ids = torch.as_tensor(row_ids, dtype=torch.int64).reshape(-1)
        if ids.numel() != self.precise_rows:
            raise ValueError(f"QuantEmbedding4.set_precise_rows: {ids.numel()} ids for precise_rows={self.precise_rows}")
        if ids.unique().numel() != ids.numel() or bool(((ids < 0) | (ids >= self.num_embeddings)).any()):
            raise ValueError(f"QuantEmbedding4.set_precise_rows: row ids must be distinct and in 0..{self.num_embeddings - 1}")
        order = ids.argsort()
        q, scales = quantize_int8_groups(float_rows.detach()[order], ROW_GROUP)
        self.row_ids.copy_(ids[order])
        self.row_qweight.copy_(q)
        self.row_scales.copy_(scales)

    def precise_row_values(self, dtype: torch.dtype | None = None) -> Tensor:
        """The int8 rows dequantised, ``[K, D]`` (in the order of ``row_ids``)."""
        return dequantize_int8_groups(self.row_qweight, self.row_scales, ROW_GROUP, dtype or self.dtype)

    def _row_slots(self, flat_ids: Tensor) -> tuple[Tensor, Tensor]:
        """For ids ``[N]``: which are precise rows (``[N]`` bool) and their slot in ``row_ids``."""
        slot = torch.searchsorted(self.row_ids, flat_ids).clamp(max=self.precise_rows - 1)
        return self.row_ids[slot] == flat_ids, slot

    @classmethod
    def from_codes(cls, q: Tensor, scales: Tensor, zeros: Tensor, group_size: int,
                   dtype: torch.dtype = torch.float32, method: str = "rtn",
                   zero_point: str = "int", precise_rows: int = 0) -> "QuantEmbedding4":
        """Build from unpacked codes ``q`` uint8 ``[V, D]`` and ``[V, D // g]`` scales/zeros
        (e.g. GPTQ of the tied LM head, whose weight is this table); precise rows, if any, are
        set afterwards (:meth:`set_precise_rows`)."""
        layer = cls(q.shape[0], q.shape[1], group_size, dtype, method, zero_point, precise_rows)
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
        """Bytes of the stored codes, scales and zeros (and of the precise rows)."""
        tensors = [self.qweight, self.scales, self.zeros]
        if self.precise_rows:
            tensors += [self.row_ids, self.row_qweight, self.row_scales]
        return sum(t.numel() * t.element_size() for t in tensors)

    def forward(self, input_ids: Tensor) -> Tensor:
        """Embeddings ``[..., D]`` of ``input_ids`` ``[...]``; dequantises only the gathered rows."""
        flat = input_ids.reshape(-1)
        rows = dequantize(unpack_int4(self.qweight[flat]), self.scales[flat], self.zeros[flat], self.group_size,
                          self.dtype, self.zero_point)                                 # [N, D]
        if self.precise_rows:
            hit, slot = self._row_slots(flat)
            if bool(hit.any()):
                precise = dequantize_int8_groups(self.row_qweight[slot[hit]], self.row_scales[slot[hit]], ROW_GROUP,
                                                 self.dtype)
                rows[hit] = precise
        return rows.reshape(*input_ids.shape, self.embedding_dim)

    def tied_head(self, kernel: str = "cached") -> "QuantLinear4 | TiedRowsHead":
        """A bias-free ``D -> V`` :class:`QuantLinear4` whose codes, scales and zeros ARE this
        table's tensors (the tied LM head; stored once); with precise rows, a :class:`TiedRowsHead`
        around it that takes those rows' logits from the int8 rows."""
        head = QuantLinear4(self.embedding_dim, self.num_embeddings, bias=False, group_size=self.group_size,
                            kernel=kernel, method=self.method, zero_point=self.zero_point)
        head = head.to(self.qweight.device)
        for name in ("qweight", "scales", "zeros"):
            head._buffers[name] = self._buffers[name]
        return TiedRowsHead(head, self) if self.precise_rows else head

    def extra_repr(self) -> str:
        rows = f", precise_rows={self.precise_rows} (int8)" if self.precise_rows else ""
        return (f"{self.num_embeddings}, {self.embedding_dim}, bits=4, group_size={self.group_size}, "
                f"zero_point={self.zero_point}, method={self.method}{rows}")


class TiedRowsHead(nn.Module):
    """The tied LM head of a :class:`QuantEmbedding4` with precise rows: the int4 head (``base``,
    a :class:`QuantLinear4` over the table's codes) computes every logit, then the precise rows'
    logits are recomputed from their int8 values. Its ``row_*`` buffers ARE the table's."""

    def __init__(self, base: QuantLinear4, table: QuantEmbedding4) -> None:
        super().__init__()
        self.base = base
        self.in_features, self.out_features = base.in_features, base.out_features
        for name in ("row_ids", "row_qweight", "row_scales"):
            self.register_buffer(name, table._buffers[name])

    def forward(self, x: Tensor) -> Tensor:
        logits = self.base(x)
        precise = dequantize_int8_groups(self.row_qweight, self.row_scales, ROW_GROUP, x.dtype)  # [K, D]
        logits[..., self.row_ids] = torch.nn.functional.linear(x, precise).to(logits.dtype)
        return logits


def is_tied(embedding: nn.Module, head: nn.Module | None) -> bool:
    """Whether ``head`` (an ``nn.Linear``) uses the same weight tensor as ``embedding``."""
    w_in, w_out = getattr(embedding, "weight", None), getattr(head, "weight", None)
    return (isinstance(w_in, Tensor) and isinstance(w_out, Tensor)
            and w_in.untyped_storage().data_ptr() == w_out.untyped_storage().data_ptr()
            and w_in.shape == w_out.shape)


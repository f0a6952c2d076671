"""Learned-query resampler projector.

A fixed number of learned queries cross-attend the input tokens, as the
Perceiver Resampler of Flamingo (Alayrac et al., "Flamingo: a Visual Language
Model for Few-Shot Learning", NeurIPS 2022) and the Q-Former of BLIP-2 (Li et
al., 2023). No positional embedding is added here (BEV tokens already carry
their position from the encoder), so the output does not depend on the
order of the input tokens.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bevlm.registry import MODELS


class CrossAttentionBlock(nn.Module):
    """Pre-norm block: ``q += MHA(LN(q), LN(x))``; ``q += MLP(LN(q))``.

    Args:
        dims: width D of queries and keys/values.
        num_heads: attention heads (D divisible by it).
        mlp_ratio: hidden width of the MLP is ``mlp_ratio * D``.
    """

    def __init__(self, dims: int, num_heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        if dims % num_heads != 0:
            raise ValueError(f"ResamplerProjector: out_dims={dims} must be divisible by "
                             f"num_heads={num_heads}; fix the projector config.")
        self.num_heads = num_heads
        self.norm_q, self.norm_kv, self.norm_mlp = nn.LayerNorm(dims), nn.LayerNorm(dims), nn.LayerNorm(dims)
        self.to_q, self.to_kv = nn.Linear(dims, dims), nn.Linear(dims, 2 * dims)
        self.proj = nn.Linear(dims, dims)
        self.mlp = nn.Sequential(nn.Linear(dims, mlp_ratio * dims), nn.GELU(),
                                 nn.Linear(mlp_ratio * dims, dims))

    def forward(self, q: Tensor, x: Tensor, attn_mask: Tensor | None,
                has_tokens: Tensor | None = None) -> Tensor:
        """Args: q ``[B, Nq, D]``; x ``[B, L, D]``; attn_mask ``[B, 1, 1, L]`` bool (True =
        attend); has_tokens ``[B]`` bool, False zeroes the attention output of that sample.

        Returns: ``[B, Nq, D]``.
        """
        b, nq, d = q.shape
        h = self.num_heads
        kv = self.norm_kv(x)
        k, v = self.to_kv(kv).chunk(2, dim=-1)
        query = self.to_q(self.norm_q(q)).view(b, nq, h, d // h).transpose(1, 2)  # [B, h, Nq, D/h]
        k = k.view(b, -1, h, d // h).transpose(1, 2)  # [B, h, L, D/h]
        v = v.view(b, -1, h, d // h).transpose(1, 2)
        attn = F.scaled_dot_product_attention(query, k, v, attn_mask=attn_mask)  # [B, h, Nq, D/h]
        attn = self.proj(attn.transpose(1, 2).reshape(b, nq, d))  # [B, Nq, D]
        if has_tokens is not None:
            attn = attn * has_tokens.view(b, 1, 1).to(attn.dtype)
        q = q + attn
        return q + self.mlp(self.norm_mlp(q))


@MODELS.register_module()
class ResamplerProjector(nn.Module):
    """``[B, L, C]`` -> ``[B, num_queries, D]`` with learned queries.

    Args:
        in_dims: input token channels C.
        out_dims: LLM hidden size D.
        num_queries: output tokens.
        num_layers: cross-attention blocks.
        num_heads: attention heads.
    """

    def __init__(self, in_dims: int, out_dims: int, num_queries: int = 16, num_layers: int = 1,
                 num_heads: int = 4) -> None:
        super().__init__()
        self.in_dims, self.out_dims, self.num_queries = in_dims, out_dims, num_queries
        self.input_proj = nn.Linear(in_dims, out_dims)
        self.queries = nn.Parameter(torch.randn(num_queries, out_dims) * 0.02)
        self.blocks = nn.ModuleList(CrossAttentionBlock(out_dims, num_heads) for _ in range(num_layers))
        self.norm_out = nn.LayerNorm(out_dims)

    @property
    def num_tokens(self) -> int:
        """Output tokens (num_queries)."""
        return self.num_queries

    def forward(self, x: Tensor, keep_mask: Tensor | None = None) -> Tensor:
        """Resample tokens.

        Args:
            x: ``[B, L, C]`` input tokens.
            keep_mask: ``[B, L]`` bool; False tokens are not attended. A sample
                with no kept token gets the queries' output without attention
                to any token (its attention output is zero).

        Returns:
            ``[B, num_queries, D]``.
        """
        b, length, c = x.shape
        if c != self.in_dims:
            raise ValueError(f"ResamplerProjector: input has {c} channels, expected in_dims="
                             f"{self.in_dims}; fix the projector config.")
        attn_mask, has_tokens = None, None
        if keep_mask is not None:
            if tuple(keep_mask.shape) != (b, length):
                raise ValueError(f"ResamplerProjector: keep_mask must be [B, L] = {(b, length)}, "
                                 f"got {tuple(keep_mask.shape)}.")
            keep = keep_mask.to(torch.bool)
            has_tokens = keep.any(dim=1)  # [B]
            if not bool(has_tokens.all()):
                keep = keep | ~has_tokens.view(b, 1)  # avoid an all-masked softmax (NaN)
            else:
                has_tokens = None
            attn_mask = keep.view(b, 1, 1, length)  # [B, 1, 1, L]
        tokens = self.input_proj(x)  # [B, L, D]
        q = self.queries.unsqueeze(0).expand(b, -1, -1)  # [B, Nq, D]
        for block in self.blocks:
            q = block(q, tokens, attn_mask, has_tokens)
        return self.norm_out(q)

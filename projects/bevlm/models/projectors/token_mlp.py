"""Token-wise MLP projector: every input token becomes one LLM token.

The connector of LLaVA-1.5 (Liu et al., "Improved Baselines with Visual Instruction Tuning",
2023) without any pooling: ``Linear -> GELU -> Linear`` applied to each token. With
:class:`~bevlm.models.bev.camera_tokens.CameraPatchTokens` at CLIP-like counts (6 cameras x 64
patches = 384 tokens) it gives the camera-token baseline the prefill length of a CLIP-based
driving VLM, so that the BEV path's shorter prefix is measured against it.
"""
from __future__ import annotations

from torch import Tensor, nn

from bevlm.registry import MODELS


@MODELS.register_module()
class TokenMLPProjector(nn.Module):
    """``[B, L, C]`` -> ``[B, L, D]``, one output token per input token.

    Args:
        in_dims: input channels C.
        out_dims: LLM hidden size D.
        num_tokens: expected input length L (checked; it is the visual prefix length).
    """

    def __init__(self, in_dims: int, out_dims: int, num_tokens: int) -> None:
        super().__init__()
        self.in_dims, self.out_dims, self._num_tokens = in_dims, out_dims, num_tokens
        self.mlp = nn.Sequential(nn.Linear(in_dims, out_dims), nn.GELU(), nn.Linear(out_dims, out_dims))

    @property
    def num_tokens(self) -> int:
        """Output tokens (= input tokens)."""
        return self._num_tokens

    def forward(self, x: Tensor, keep_mask: Tensor | None = None) -> Tensor:
        """Project each token; ``keep_mask`` ``[B, L]`` (False = pruned) zeroes pruned tokens."""
        if x.dim() != 3 or x.shape[1] != self._num_tokens or x.shape[2] != self.in_dims:
            raise ValueError(f"TokenMLPProjector: input must be [B, {self._num_tokens}, {self.in_dims}], got "
                             f"{tuple(x.shape)}; check `num_tokens` and `in_dims` against the token source "
                             "(e.g. camera_tokens num_cams * tokens_per_cam).")
        out = self.mlp(x)
        if keep_mask is not None:
            out = out * keep_mask.to(out.dtype).unsqueeze(-1)
        return out

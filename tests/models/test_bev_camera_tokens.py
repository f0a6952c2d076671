"""Camera patch-token baseline."""
import torch

from bevlm.models.bev import CameraPatchTokens
from bevlm.models.projectors import ResamplerProjector


def test_camera_tokens_shape_pooling_and_camera_embedding():
    torch.manual_seed(0)
    mod = CameraPatchTokens(in_dims=8, num_cams=6, tokens_per_cam=6)
    assert mod.grid_hw == (2, 3) and mod.num_tokens == 36
    feat = torch.randn(2, 6, 8, 4, 6)
    out = mod([feat, torch.randn(2, 6, 8, 2, 3)])
    assert out.shape == (2, 36, 8)
    # Token 0 of camera 1 = mean of that camera's top-left 2x2 block + embeddings.
    expected = feat[0, 1, :, :2, :2].mean((1, 2)) + mod.cam_embed[1] + mod.patch_embed[0]
    torch.testing.assert_close(out[0, 6], expected)
    # Identical features in two cameras still give different tokens (camera embedding).
    same = feat.clone()
    same[:, 2] = same[:, 3]
    out = mod([same])
    assert not torch.allclose(out[:, 12:18], out[:, 18:24])
    # Same LLM token budget as the BEV path behind a resampler.
    assert ResamplerProjector(8, 16, num_queries=16)(out).shape == (2, 16, 16)

"""Projectors from BEV tokens to LLM visual tokens."""
import torch

from bevlm.models.projectors import PoolMLPProjector, ResamplerProjector, TokenMLPProjector


def test_pool_mlp_shapes_and_mask():
    torch.manual_seed(0)
    proj = PoolMLPProjector(in_dims=8, out_dims=12, bev_h=8, bev_w=8, out_h=2, out_w=2)
    x = torch.randn(2, 64, 8)
    out = proj(x)
    assert out.shape == (2, 4, 12) and proj.num_tokens == 4
    torch.testing.assert_close(proj(x, torch.ones(2, 64, dtype=torch.bool)), out)
    # Masked cells are excluded: count-normalised pooling of kept cells only.
    keep = torch.zeros(2, 64, dtype=torch.bool)
    keep[:, 0] = True  # only cell (0, 0) kept in the top-left pooled cell
    keep[:, 63] = True
    expected_tl = proj.mlp(x[:, 0])
    torch.testing.assert_close(proj(x, keep)[:, 0], expected_tl)
    # Changing pruned tokens changes nothing.
    x2 = x.clone()
    x2[:, 1:63] = 100.0
    torch.testing.assert_close(proj(x2, keep), proj(x, keep))


def test_resampler_shapes_mask_and_permutation_invariance():
    torch.manual_seed(0)
    proj = ResamplerProjector(in_dims=8, out_dims=16, num_queries=5, num_layers=2, num_heads=4)
    x = torch.randn(2, 30, 8)
    out = proj(x)
    assert out.shape == (2, 5, 16) and proj.num_tokens == 5
    torch.testing.assert_close(proj(x, torch.ones(2, 30, dtype=torch.bool)), out, atol=1e-5, rtol=1e-5)
    perm = torch.randperm(30)
    torch.testing.assert_close(proj(x[:, perm]), out, atol=1e-5, rtol=1e-5)
    keep = torch.rand(2, 30) > 0.5
    keep[1] = False  # a sample with no kept token stays finite
    masked = proj(x, keep)
    assert torch.isfinite(masked).all()
    # Masked tokens are excluded: equals running on the kept tokens only.
    kept = proj(x[:1, keep[0]])
    torch.testing.assert_close(masked[:1], kept, atol=1e-5, rtol=1e-5)


def test_token_mlp_is_tokenwise_and_checks_its_input():
    torch.manual_seed(0)
    proj = TokenMLPProjector(in_dims=8, out_dims=12, num_tokens=5)
    x = torch.randn(2, 5, 8)
    out = proj(x)
    assert out.shape == (2, 5, 12) and proj.num_tokens == 5
    # each output token depends on its own input token only (a permutation of tokens permutes outputs)
    perm = torch.tensor([4, 2, 0, 1, 3])
    torch.testing.assert_close(proj(x[:, perm]), out[:, perm])
    torch.testing.assert_close(out[1, 3], proj.mlp(x[1, 3]))
    keep = torch.tensor([[True, False, True, True, True], [True] * 5])
    masked = proj(x, keep)
    assert masked[0, 1].abs().sum() == 0 and torch.equal(masked[1], out[1])
    import pytest

    with pytest.raises(ValueError, match=r"input must be \[B, 5, 8\], got \(2, 6, 8\)"):
        proj(torch.randn(2, 6, 8))

"""BEVFormer-lite encoder: shapes, gradients, temporal validity, early exit."""
import pytest
import torch

from bevlm.models.bev import BEVFormerLiteEncoder, ego2img_from_rig
from bevlm.structures import CAMERA_NAMES, EgoMotion, nominal_rig

IMG = (90, 160)  # (H, W)
CFG = dict(embed_dims=16, bev_h=8, bev_w=8, pc_range=(-32.0, -32.0, -3.0, 32.0, 32.0, 3.0),
           num_heads=2, num_levels=2, num_points=2, num_z_anchors=2, num_cams=6, ffn_dims=32)


def _inputs(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(b, 6, 16, 6, 10, generator=g), torch.randn(b, 6, 16, 3, 5, generator=g)]
    ego2img = ego2img_from_rig(nominal_rig((IMG[1], IMG[0])), CAMERA_NAMES).expand(b, 6, 4, 4)
    return feats, ego2img


def _randomise(model):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # leave the zero-initialised attention weights of a fresh model behind
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return _randomise(BEVFormerLiteEncoder(num_layers=2, **CFG)).eval()


def test_shape_and_gradients_reach_queries_and_features(encoder):
    feats, ego2img = _inputs()
    feats = [f.clone().requires_grad_(True) for f in feats]
    bev = encoder(feats, ego2img, IMG, None, None)
    assert bev.shape == (2, 64, 16)
    bev.square().mean().backward()
    assert encoder.bev_embedding.weight.grad.abs().sum() > 0
    assert all(f.grad.abs().sum() > 0 for f in feats)
    encoder.zero_grad()


def test_invalid_motion_ignores_prev_bev(encoder):
    feats, ego2img = _inputs()
    with torch.no_grad():
        prev = torch.randn(2, 64, 16)
        motion = EgoMotion(torch.eye(4).expand(2, 4, 4), torch.tensor([False, True]))
        with_prev = encoder(feats, ego2img, IMG, prev, motion)
        without = encoder(feats, ego2img, IMG, None, None)
    torch.testing.assert_close(with_prev[0], without[0])  # first frame of its scene
    assert not torch.allclose(with_prev[1], without[1], atol=1e-4)  # prev_bev used where valid


def test_no_temporal_skips_prev_bev():
    torch.manual_seed(0)
    enc = _randomise(BEVFormerLiteEncoder(num_layers=1, use_temporal=False, **CFG)).eval()
    assert not any("tsa" in n for n, _ in enc.named_parameters())
    feats, ego2img = _inputs(b=1)
    with torch.no_grad():
        a = enc(feats, ego2img, IMG, torch.randn(1, 64, 16), EgoMotion.stack([EgoMotion.identity(True)]))
        b = enc(feats, ego2img, IMG, None, None)
    torch.testing.assert_close(a, b)


def test_early_exit_equals_one_layer_model(encoder):
    feats, ego2img = _inputs()
    one = BEVFormerLiteEncoder(num_layers=1, **CFG).eval()
    state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("layers.1.")}
    one.load_state_dict(state, strict=True)
    with torch.no_grad():
        early = encoder(feats, ego2img, IMG, None, None, num_layers=1)
        full = encoder(feats, ego2img, IMG, None, None)
        single = one(feats, ego2img, IMG, None, None)
    torch.testing.assert_close(early, single)
    assert not torch.allclose(early, full, atol=1e-4)


def test_bad_inputs_raise_clear_errors(encoder):
    feats, ego2img = _inputs()
    with pytest.raises(ValueError, match="num_outs"):
        encoder(feats[:1], ego2img, IMG, None, None)
    with pytest.raises(ValueError, match="ego_motion"):
        encoder(feats, ego2img, IMG, torch.zeros(2, 64, 16), None)
    with pytest.raises(ValueError, match="num_layers"):
        encoder(feats, ego2img, IMG, None, None, num_layers=3)

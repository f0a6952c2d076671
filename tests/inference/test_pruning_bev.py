"""BEV-side occupancy pruning, token selection, and encoder early-exit FLOPs."""
import pytest
import torch

from bevlm.models.pruning import (bev_encoder_flops_by_layers, bev_keep_for_model, bev_token_keep,
                                  pool_token_scores, select_tokens, top_indices)
from bevlm.models.bev import BEVFormerLiteEncoder, ego2img_from_rig
from bevlm.models.heads import BEVAuxHead
from bevlm.models.projectors import PoolMLPProjector, ResamplerProjector
from bevlm.structures import CAMERA_NAMES, nominal_rig

torch.set_num_threads(1)


def _occupancy():
    """4x4 BEV, 2x2 token grid. Quadrant means: TL 0.5, TR 0.1, BL 0.2, BR 0.9."""
    grid = torch.zeros(4, 4)
    grid[:2, :2], grid[:2, 2:], grid[2:, :2], grid[2:, 2:] = 0.5, 0.1, 0.2, 0.9
    grid[0, 0] = 0.8  # unequal cells: the token score is their mean (TL = 0.575)
    grid[1, 1] = 0.2
    return grid.flatten()[None]  # [1, 16]


def test_hand_made_occupancy_keeps_the_expected_tokens():
    occ = _occupancy()
    torch.testing.assert_close(pool_token_scores(occ, (4, 4), (2, 2)), torch.tensor([[0.5, 0.1, 0.2, 0.9]]))
    assert bev_token_keep(occ, (4, 4), (2, 2), 0.5).tolist() == [[0, 3]]  # order preserved, not [3, 0]
    assert bev_token_keep(occ, (4, 4), (2, 2), 0.75).tolist() == [[0, 2, 3]]
    assert bev_token_keep(occ, (4, 4), (2, 2), 0.01).tolist() == [[3]]  # at least one token
    assert bev_token_keep(occ, (4, 4), (2, 2), 1.0).tolist() == [[0, 1, 2, 3]]
    # per sample in a batch: the flipped map keeps the mirrored tokens
    both = torch.cat([occ, occ.view(1, 4, 4).flip(1).flatten(1)])
    assert bev_token_keep(both, (4, 4), (2, 2), 0.5).tolist() == [[0, 3], [1, 2]]


def test_select_tokens_and_identity():
    vis = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    keep = torch.tensor([[0, 3], [1, 2]])
    out = select_tokens(vis, keep)
    assert torch.equal(out[0], vis[0, [0, 3]]) and torch.equal(out[1], vis[1, [1, 2]])
    assert torch.equal(select_tokens(vis, torch.arange(4).expand(2, 4)), vis)
    # ties go to the lower index, deterministically
    assert top_indices(torch.tensor([[1.0, 2.0, 2.0, 2.0]]), 2).tolist() == [[1, 2]]
    with pytest.raises(ValueError, match="keep_ratio"):
        bev_token_keep(_occupancy(), (4, 4), (2, 2), 1.5)
    with pytest.raises(ValueError, match="bev_hw"):
        bev_token_keep(_occupancy(), (4, 5), (2, 2), 0.5)


def test_model_wiring_uses_the_aux_head_occupancy():
    torch.manual_seed(0)
    head = BEVAuxHead(embed_dims=8, num_classes=3, bev_h=4, bev_w=4, pc_range=(-8, -8, -3, 8, 8, 3),
                      hidden_dims=8).eval()
    proj = PoolMLPProjector(in_dims=8, out_dims=16, bev_h=4, bev_w=4, out_h=2, out_w=2)
    bev = torch.randn(2, 16, 8)
    with torch.no_grad():
        keep = bev_keep_for_model(head, proj, bev, 0.5)
        expected = bev_token_keep(head.occupancy_score(bev), (4, 4), (2, 2), 0.5)
    assert keep.shape == (2, 2) and torch.equal(keep, expected)
    with pytest.raises(ValueError, match="grid projector"):
        bev_keep_for_model(head, ResamplerProjector(in_dims=8, out_dims=16, num_queries=4), bev, 0.5)
    with pytest.raises(ValueError, match="aux_head"):
        bev_keep_for_model(None, proj, bev, 0.5)


def test_encoder_early_exit_flops_decrease_with_layers():
    torch.manual_seed(0)
    encoder = BEVFormerLiteEncoder(embed_dims=16, bev_h=8, bev_w=8, num_layers=3, num_heads=2, num_levels=2,
                                   num_points=2, num_z_anchors=2, ffn_dims=32).eval()
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(1, 6, 16, 6, 10, generator=g), torch.randn(1, 6, 16, 3, 5, generator=g)]
    ego2img = ego2img_from_rig(nominal_rig((160, 90)), CAMERA_NAMES)[None]  # [1, 6, 4, 4]
    flops = bev_encoder_flops_by_layers(encoder, feats, ego2img, (90, 160))
    assert list(flops) == [1, 2, 3]
    assert 0 < flops[1] < flops[2] < flops[3]
    assert flops[3] - flops[2] == flops[2] - flops[1]  # identical layers cost the same
    assert all(p.requires_grad for p in encoder.parameters())  # counting restores trainability

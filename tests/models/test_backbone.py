"""timm backbone (no downloads) and FPN-lite neck."""
import pytest
import torch

from bevlm.models.backbones import TimmBackbone
from bevlm.models.necks import FPNLite


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return TimmBackbone("resnet18", out_indices=(2, 3, 4)).eval()


def test_resnet18_feature_shapes_and_fpn(backbone):
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        feats = backbone(x)
    assert backbone.out_channels == [128, 256, 512] and backbone.strides == [8, 16, 32]
    assert [tuple(f.shape) for f in feats] == [(1, 128, 8, 12), (1, 256, 4, 6), (1, 512, 2, 3)]
    neck = FPNLite(backbone.out_channels, out_channels=16, num_outs=2)
    outs = neck(feats)
    assert [tuple(o.shape) for o in outs] == [(1, 16, 8, 12), (1, 16, 4, 6)]
    extra = FPNLite(backbone.out_channels, out_channels=16, num_outs=4)(feats)
    assert tuple(extra[-1].shape) == (1, 16, 1, 2)
    # Top-down pathway: the finest output depends on the coarsest input.
    feats2 = [feats[0], feats[1], feats[2] + 1.0]
    assert not torch.allclose(neck(feats2)[0], outs[0])


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_checkpoint_round_trips(backbone, tmp_path, suffix):
    path = str(tmp_path / f"weights{suffix}")
    state = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    state["fc.weight"] = torch.zeros(3, 512)  # extra classifier keys are ignored
    if suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(state, path)
    else:
        torch.save({"state_dict": state}, path)
    torch.manual_seed(123)
    loaded = TimmBackbone("resnet18", pretrained=path, out_indices=(2, 3, 4))
    for k, v in backbone.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k


def test_wrong_checkpoint_and_missing_cache_raise(tmp_path, monkeypatch):
    torch.save({"conv1.weight": torch.zeros(1)}, str(tmp_path / "bad.pth"))
    with pytest.raises(KeyError, match="lacks"):
        TimmBackbone("resnet18", pretrained=str(tmp_path / "bad.pth"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TimmBackbone("resnet18", pretrained=str(tmp_path / "missing.pth"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache"):
        TimmBackbone("resnet18", pretrained="hf-cache")


def test_frozen_stages_and_norm_eval():
    bb = TimmBackbone("resnet18", out_indices=(3, 4), frozen_stages=1, norm_eval=True).train()
    assert not any(p.requires_grad for p in bb.model.conv1.parameters())
    assert not any(p.requires_grad for p in bb.model.layer1.parameters())
    assert all(p.requires_grad for p in bb.model.layer2.parameters())
    assert not bb.model.layer3[0].bn1.training and bb.model.layer3[0].conv1.training


def test_hf_cache_weights_are_found_offline(backbone, tmp_path, monkeypatch):
    from safetensors.torch import save_file
    snapshot = tmp_path / "hub" / "models--timm--resnet18.a1_in1k" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    save_file({k: v.clone() for k, v in backbone.model.state_dict().items()},
              str(snapshot / "model.safetensors"))
    (tmp_path / "hub" / "models--timm--resnet18.a1_in1k" / "refs").mkdir()
    (tmp_path / "hub" / "models--timm--resnet18.a1_in1k" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    loaded = TimmBackbone("resnet18", pretrained="hf-cache", out_indices=(2, 3, 4))
    assert torch.equal(loaded.model.layer4[1].conv2.weight, backbone.model.layer4[1].conv2.weight)

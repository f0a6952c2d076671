"""BEVDet (stage-1 detector): modes, gradients, shared encoder path, state-dict keys, config."""
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from bevlm.models.bev.multiview_encoder import encode_bev_queue
from bevlm.registry import DATASETS, MODELS
from tests.conftest import REPO

init_default_scope("bevlm")

SHARED = ("img_backbone.", "img_neck.", "bev_encoder.", "aux_head.")


def _tiny_det_cfg():
    """``configs/_base_/models/bev_det.py`` at the sizes of ``configs/bev_vlm_tiny.py`` (8x8 BEV)."""
    tiny = Config.fromfile(f"{REPO}/configs/bev_vlm_tiny.py")
    cfg = Config.fromfile(f"{REPO}/configs/_base_/models/bev_det.py").model.to_dict()
    for key in ("img_backbone", "img_neck", "bev_encoder", "aux_head"):
        cfg[key] = tiny.model[key].to_dict()
    enc = cfg["bev_encoder"]
    cfg["det_head"].update(embed_dims=enc["embed_dims"], bev_h=enc["bev_h"], bev_w=enc["bev_w"],
                           hidden_dims=16, score_threshold=0.0, max_num=7)
    return cfg, tiny


@pytest.fixture(scope="module")
def det_batch(tiny_world):
    cfg, tiny = _tiny_det_cfg()
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    ds = DATASETS.build(dict(type="BEVDriveDataset", ann_file=f"{tiny_world}/infos/bevlm_infos_train.pkl",
                             data_root=f"{tiny_world}/", pipeline=tiny.pipeline, queue_length=2,
                             qa_mode="none", require_qa=False))
    data = model.data_preprocessor(pseudo_collate([ds[2], ds[3]]), True)
    return model, data


def test_loss_has_finite_terms_and_trains_every_shared_module(det_batch):
    model, data = det_batch
    model.train()
    losses = model(data["inputs"], data["data_samples"], mode="loss")
    assert set(losses) == {"loss_det_heatmap", "loss_det_bbox", "loss_heatmap", "loss_occ"}
    assert all(torch.isfinite(v) for v in losses.values())
    model.zero_grad()
    sum(losses.values()).backward()
    for prefix in ("img_backbone", "img_neck", "bev_encoder", "det_head"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix) and p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), prefix


def test_det_training_boxes_skip_boxes_without_points(det_batch):
    model, data = det_batch
    sample = data["data_samples"][0]
    assert sample.gt_num_pts.shape == sample.gt_labels.shape
    model.min_gt_pts = 10 ** 9  # no box has that many points: the detection target is empty
    try:
        losses = model(data["inputs"], data["data_samples"], mode="loss")
    finally:
        model.min_gt_pts = 1
    assert losses["loss_det_bbox"].item() == 0.0


def test_predict_and_tensor_modes(det_batch):
    model, data = det_batch
    model.eval()
    samples = model(data["inputs"], data["data_samples"], mode="predict")
    for s in samples:
        pred = s.pred_instances_3d
        assert pred["bboxes_3d"].shape == (7, 9) and pred["scores_3d"].shape == (7,)
        assert pred["labels_3d"].dtype == torch.long and bool((pred["labels_3d"] < 10).all())
        assert bool((pred["scores_3d"][:-1] >= pred["scores_3d"][1:]).all())
    out = model(data["inputs"], data["data_samples"], mode="tensor")
    assert out["heatmap"].shape == (2, 10, 8, 8) and out["reg"].shape == (2, 10, 8, 8)
    assert out["bev"].shape == (2, 64, model.bev_encoder.embed_dims)
    with pytest.raises(ValueError, match="mode"):
        model(data["inputs"], data["data_samples"], mode="nope")


def test_encode_bev_is_the_shared_queue_path(det_batch):
    model, data = det_batch
    model.eval()
    imgs, samples = data["inputs"]["imgs"], data["data_samples"]
    with torch.no_grad():
        ref = encode_bev_queue(model._frame_bev, imgs, samples)
        # by hand: the history frame, then the current frame with the warped previous BEV
        from bevlm.structures import EgoMotion
        img_shape = tuple(samples[0].img_shape)
        e2i = torch.stack([s.ego2img for s in samples])
        qvalid = torch.stack([s.queue_valid for s in samples])
        prev = model._frame_bev(imgs[:, 0], e2i[:, 0], img_shape, None, None)
        motion = EgoMotion.stack([s.ego_motion[1] for s in samples])
        motion.valid = motion.valid & qvalid[:, 0] & qvalid[:, 1]
        manual = model._frame_bev(imgs[:, 1], e2i[:, 1], img_shape,
                                  prev if bool(motion.valid.any()) else None, motion)
    assert torch.allclose(ref, manual, atol=1e-5)
    assert torch.allclose(model.encode_bev(imgs, samples), ref, atol=1e-5)


def test_state_dict_keys_load_into_bevvlm(det_batch):
    """Stage 2 ``load_from``: backbone / neck / encoder / aux keys and shapes equal BEVVLM's."""
    model, _ = det_batch
    tiny = Config.fromfile(f"{REPO}/configs/bev_vlm_tiny.py")
    vlm = MODELS.build(tiny.model.to_dict())
    det_sd, vlm_sd = model.state_dict(), vlm.state_dict()
    det_shared = {k: v.shape for k, v in det_sd.items() if k.startswith(SHARED)}
    vlm_shared = {k: v.shape for k, v in vlm_sd.items() if k.startswith(SHARED)}
    assert det_shared == vlm_shared and len(det_shared) > 50
    result = vlm.load_state_dict({k: v for k, v in det_sd.items() if k.startswith(SHARED)}, strict=False)
    assert not [k for k in result.missing_keys if k.startswith(SHARED)]
    key = "bev_encoder.bev_embedding.weight"
    assert torch.equal(vlm.state_dict()[key], det_sd[key])


def test_grid_mismatch_is_refused():
    cfg, _ = _tiny_det_cfg()
    cfg["det_head"]["bev_h"] = 16
    with pytest.raises(ValueError, match="det_head"):
        MODELS.build(cfg)


def test_pretrain_config_shares_the_vlm_encoder_settings():
    det = Config.fromfile(f"{REPO}/configs/bev_det_pretrain.py")
    vlm = Config.fromfile(f"{REPO}/configs/bev_vlm.py")
    for key in ("img_backbone", "img_neck", "bev_encoder", "aux_head"):
        assert det.model[key] == vlm.model[key], key
    head = det.model.det_head
    enc = vlm.model.bev_encoder
    assert (head.bev_h, head.bev_w, tuple(head.pc_range)) == (enc.bev_h, enc.bev_w, tuple(enc.pc_range))
    assert det.test_evaluator[0].type == "NuScenesDetMetric" and det.test_evaluator[0].class_range == 32.0
    assert det.train_dataloader.dataset.ann_file.endswith("train.pkl")
    assert det.test_dataloader.dataset.ann_file.endswith("val.pkl")

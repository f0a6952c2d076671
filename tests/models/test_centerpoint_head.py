"""CenterPoint detection head: box codes, targets, decoding and trainability."""
import math

import pytest
import torch

from bevlm.models.bev import ego_xy_to_bev_ij
from bevlm.models.heads.centerpoint_head import CODE_SIZE, CenterPointHead

PC = (-16.0, -16.0, -3.0, 16.0, 16.0, 3.0)  # 16 x 16 grid of 2 m cells


def _head(**kw):
    torch.manual_seed(0)
    return CenterPointHead(embed_dims=8, num_classes=3, bev_h=16, bev_w=16, pc_range=PC, hidden_dims=8, **kw)


BOXES = torch.tensor([[5.3, -3.1, 0.8, 4.5, 1.9, 1.6, 0.3, 2.0, -1.0],
                      [-9.0, 7.7, 1.0, 10.0, 2.5, 3.0, -2.5, 0.0, 0.5]])


def test_encode_decode_round_trip_and_hand_computed_code():
    head = _head()
    cells, codes, inside = head.encode_boxes(BOXES)
    assert codes.shape == (2, CODE_SIZE) and bool(inside.all())
    # x = 5.3: row i = (16 - 5.3) / 2 - 0.5 = 4.85 -> cell 5, offset -0.15;
    # y = -3.1: column j = (16 + 3.1) / 2 - 0.5 = 9.05 -> cell 9, offset 0.05
    assert cells[0].tolist() == [5, 9]
    assert torch.allclose(codes[0, :2], torch.tensor([-0.15, 0.05]), atol=1e-5)
    assert torch.allclose(codes[0, 3:6], torch.tensor([4.5, 1.9, 1.6]).log())
    assert torch.allclose(codes[0, 6:8], torch.tensor([math.sin(0.3), math.cos(0.3)]))
    back = head.decode_codes(cells, codes)
    assert torch.allclose(back, BOXES, atol=1e-5)


def test_targets_one_peak_per_box_and_ignored_labels_and_far_boxes():
    head = _head()
    boxes = torch.cat([BOXES, torch.tensor([[40.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0, 0.0, 0.0]])])
    t = head.build_targets([boxes, boxes[:1]], [torch.tensor([2, 7, 0]), torch.tensor([1])])
    heat = t["heatmap"]
    assert heat.shape == (2, 3, 16, 16)
    # sample 0: only the first box counts (label 7 is not a class, the third is outside the grid)
    assert int((heat[0] == 1).sum()) == 1 and heat[0, 2, 5, 9] == 1
    assert heat[0, :2].abs().max() == 0
    assert 0 < heat[0, 2, 5, 10] < 1
    assert t["mask"].tolist() == [[True], [True]]
    assert t["index"][:, 0].tolist() == [5 * 16 + 9, 5 * 16 + 9]
    assert heat[1, 1, 5, 9] == 1 and heat[1, [0, 2]].abs().max() == 0


def _oracle_preds(head, boxes, labels):
    """Head outputs that encode ``boxes`` exactly: heatmap logits of the targets, codes at the centres."""
    t = head.build_targets([boxes], [labels])
    target = t["heatmap"].clamp(1e-6, 1 - 1e-6)
    reg = torch.zeros(1, CODE_SIZE, 16, 16)
    cells, codes, _ = head.encode_boxes(boxes)
    for (i, j), code in zip(cells.tolist(), codes):
        reg[0, :, i, j] = code
    return dict(heatmap=torch.logit(target), reg=reg)


def test_predict_recovers_the_boxes_of_oracle_outputs():
    head = _head(score_threshold=0.5, max_num=20)
    labels = torch.tensor([2, 0])
    out = head.predict(_oracle_preds(head, BOXES, labels))[0]
    # 3x3 max-pool NMS keeps the two peaks and drops their Gaussian shoulders (< 1) under the threshold
    assert out["bboxes_3d"].shape == (2, 9)
    order = out["labels_3d"].argsort(descending=True)
    assert out["labels_3d"][order].tolist() == [2, 0]
    assert torch.allclose(out["bboxes_3d"][order], BOXES, atol=1e-4)
    assert torch.allclose(out["scores_3d"], torch.ones(2), atol=1e-5)


def test_nms_suppresses_non_maxima_but_keeps_top_k():
    head = _head(score_threshold=0.0, max_num=5)
    heat = torch.full((1, 3, 16, 16), -10.0)
    heat[0, 0, 4, 4], heat[0, 0, 4, 5] = 3.0, 2.0  # a neighbour of a stronger peak: suppressed
    heat[0, 1, 4, 5] = 1.0  # same cell, other class: kept (NMS is per class)
    out = head.predict(dict(heatmap=heat, reg=torch.zeros(1, CODE_SIZE, 16, 16)))[0]
    kept = {(int(lbl), round(float(s), 4)) for lbl, s in zip(out["labels_3d"], out["scores_3d"]) if s > 0.01}
    assert kept == {(0, round(torch.sigmoid(torch.tensor(3.0)).item(), 4)),
                    (1, round(torch.sigmoid(torch.tensor(1.0)).item(), 4))}
    assert out["bboxes_3d"].shape[0] == 5  # top-K with a zero threshold


def test_loss_zero_bbox_on_oracle_and_decreases_with_training():
    head = _head()
    labels = torch.tensor([2, 0])
    oracle = _oracle_preds(head, BOXES, labels)
    assert head.loss(oracle, [BOXES], [labels])["loss_det_bbox"].item() < 1e-6
    bev = torch.randn(2, 256, 8)
    boxes, lbls = [BOXES, torch.zeros(0, 9)], [labels, torch.zeros(0, dtype=torch.long)]
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    totals = []
    for _ in range(20):
        loss = head.loss(head(bev), boxes, lbls)
        total = loss["loss_det_heatmap"] + loss["loss_det_bbox"]
        totals.append(total.item())
        opt.zero_grad()
        total.backward()
        opt.step()
    assert totals[-1] < 0.6 * totals[0]


def test_bad_inputs_name_the_key():
    with pytest.raises(ValueError, match="code_weights"):
        _head(code_weights=(1.0,) * 8)
    head = _head()
    with pytest.raises(ValueError, match="gt_boxes"):
        head.build_targets([torch.zeros(2, 5)], [torch.zeros(2, dtype=torch.long)])
    with pytest.raises(ValueError, match="gt_labels"):
        head.build_targets([BOXES], [torch.zeros(3, dtype=torch.long)])


def test_centre_cell_matches_the_grid_convention():
    head = _head()
    cells, _, _ = head.encode_boxes(BOXES)
    assert torch.equal(cells, ego_xy_to_bev_ij(BOXES[:, :2], 16, 16, PC).round().long())

# Real-scale stage-1 perception model: the vision side of bev_vlm_r50.py (same module names and
# sizes, so the stage-2 BEV-VLM loads it with `load_from`) + a CenterPoint head for the 10
# nuScenes detection classes; no LLM.
_base_ = ["./bev_vlm_r50.py"]

model = dict(
    _delete_=True,
    type="BEVDet",
    data_preprocessor={{_base_.model.data_preprocessor}},
    img_backbone={{_base_.model.img_backbone}},
    img_neck={{_base_.model.img_neck}},
    bev_encoder={{_base_.model.bev_encoder}},
    aux_head={{_base_.model.aux_head}},
    det_head=dict(type="CenterPointHead", embed_dims={{_base_.embed_dims}}, num_classes=10,
                  bev_h={{_base_.bev_h}}, bev_w={{_base_.bev_w}}, pc_range={{_base_.pc_range}},
                  hidden_dims=256, min_radius=2, gaussian_overlap=0.1, loss_heatmap_weight=1.0,
                  loss_bbox_weight=0.25, max_num=300, score_threshold=0.05),
    min_gt_pts=1,
)

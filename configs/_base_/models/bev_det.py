# Stage-1 perception model (BEVDet): the BEV-VLM's image backbone, FPN and BEVFormer-lite, read
# from bev_vlm.py so the grid (32x32 over +-32 m) and every encoder setting are the same, plus a
# CenterPoint head (and the auxiliary heatmap + occupancy head); no LLM. The module names equal
# BEVVLM's, so a stage-2 config can `load_from` this model's checkpoint.
_base_ = ["./bev_vlm.py"]

model = dict(
    _delete_=True,
    type="BEVDet",
    data_preprocessor={{_base_.model.data_preprocessor}},
    img_backbone={{_base_.model.img_backbone}},
    img_neck={{_base_.model.img_neck}},
    bev_encoder={{_base_.model.bev_encoder}},
    aux_head={{_base_.model.aux_head}},
    # the 10 nuScenes detection classes (labels 0-9 of the info files; traffic_light, 10, is
    # left to the auxiliary head)
    det_head=dict(type="CenterPointHead", embed_dims={{_base_.embed_dims}}, num_classes=10,
                  bev_h={{_base_.bev_h}}, bev_w={{_base_.bev_w}}, pc_range={{_base_.pc_range}},
                  hidden_dims=64, min_radius=1, gaussian_overlap=0.1, loss_heatmap_weight=1.0,
                  loss_bbox_weight=0.25, max_num=100, score_threshold=0.05),
    min_gt_pts=1,
)

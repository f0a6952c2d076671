# Detections as text in the prefix: the stage-1 CenterPoint head (loaded from the stage-1 checkpoint with
# the rest of the vision side, frozen) decodes the frame's BEV, and the nearest road users are written
# after the visual tokens as "Detected: car 9 m <c1,CAM_FRONT,119.0,106.1>; ..." (128 tokens, padded: about 4-5 objects),
# in the c-tag format of the answers and in the stored images' pixel frame
# (bevlm.models.heads.perception_text). Hypothesis: 36 pooled visual tokens hold little of the pixel
# geometry the key-object answers need (match F1 15-18 of 40), and the detector already localises the
# objects in 3D, so copying its c-tags beats regressing them through the LLM.
_base_ = ["../bev_vlm.py"]
model = dict(
    det_head=dict(type="CenterPointHead", embed_dims={{_base_.embed_dims}}, num_classes=10,
                  bev_h={{_base_.bev_h}}, bev_w={{_base_.bev_w}}, pc_range={{_base_.pc_range}},
                  hidden_dims=64, max_num=100, score_threshold=0.05),
    perception_text=dict(score_thr=0.3, max_objects=5, max_range=40.0, num_tokens=128),
)

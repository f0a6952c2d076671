# Baseline (a): blind. Same LLM, ego token and trajectory tokens, no visual tokens at all.
_base_ = ["../bev_vlm.py"]
# no BEV, so no detections to write into the prefix either
model = dict(vision="blind", det_head=None, perception_text=None)
train_dataloader = dict(dataset=dict(queue_length=1))

# Baseline (a): blind. Same LLM, ego token and trajectory tokens, no visual tokens at all.
_base_ = ["../bev_vlm.py"]
model = dict(vision="blind")
train_dataloader = dict(dataset=dict(queue_length=1))

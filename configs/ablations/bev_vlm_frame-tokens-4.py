# Image-level temporal input (the way VLMs take video): the BEV of each of T=4 frames is encoded
# alone and the LLM sees the 4 frames' visual tokens side by side (4 x 36 tokens), instead of
# fusing the frames inside the BEV encoder. Train and test both run the whole queue.
_base_ = ["../bev_vlm.py"]
model = dict(temporal_fusion="tokens", num_frames=4, bev_encoder=dict(use_temporal=False))
train_dataloader = dict(dataset=dict(queue_length=4))
test_dataloader = dict(dataset=dict(queue_length=4))

# One LoRA adapter per domain (r=16 each, 3x the union model's adapter parameters) over the three
# domains of bev_vlm_union-3.py; each sample's domain picks its adapter in training and testing.
_base_ = ["./bev_vlm_union-3.py"]
model = dict(llm=dict(adapter_names=["day", "night", "wide"]),
             domain_adapters=dict(day="day", night="night", wide="wide"))
# inactive adapters get no gradient in a step; DDP must tolerate that
model_wrapper_cfg = dict(type="MMDistributedDataParallel", find_unused_parameters=True)

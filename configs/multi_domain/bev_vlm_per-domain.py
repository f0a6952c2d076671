# One LoRA adapter per domain (r=16 each) on the shared SmolLM2 base; each sample's domain picks
# its adapter in training and testing (BEVVLM.domain_adapters). Twice the adapter parameters of
# the union model: see bev_vlm_per-domain_equal-params.py for the fair comparison.
_base_ = ["./bev_vlm_union.py"]
model = dict(llm=dict(adapter_names=["day", "night"]), domain_adapters=dict(day="day", night="night"))
# inactive adapters get no gradient in a step; DDP must tolerate that
model_wrapper_cfg = dict(type="MMDistributedDataParallel", find_unused_parameters=True)

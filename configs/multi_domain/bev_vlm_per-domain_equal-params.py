# Per-domain adapters at the union model's total adapter parameters: 2 adapters of r=8.
_base_ = ["./bev_vlm_per-domain.py"]
model = dict(llm=dict(lora=dict(r=8, alpha=16)))

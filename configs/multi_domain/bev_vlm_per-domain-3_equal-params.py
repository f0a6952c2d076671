# Per-domain adapters at (nearly) the union model's total adapter parameters: 3 adapters of r=5
# (15 ranks against the union's 16: 0.94x the adapter parameters; 16 / 3 is not an integer).
_base_ = ["./bev_vlm_per-domain-3.py"]
model = dict(llm=dict(lora=dict(r=5, alpha=10)))

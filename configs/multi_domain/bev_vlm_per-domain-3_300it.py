# configs/multi_domain/bev_vlm_per-domain-3.py trained for 300 iterations instead of 100: about 100 steps
# (batch 2) of each of the three domains, the steps the day-only default gets, so that an adapter per
# domain is compared at the schedule one domain's model is trained at, not a third of it
# (docs/research/multi_lora.md). Three times the default's training time.
_base_ = ["./bev_vlm_per-domain-3.py"]
train_cfg = dict(max_iters=300)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=30),
    dict(type="CosineAnnealingLR", by_epoch=False, begin=30, end=300, eta_min_ratio=0.05),
]

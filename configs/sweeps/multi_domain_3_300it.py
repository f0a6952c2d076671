# Three domains at the day-only default's steps per domain: one adapter on the union vs an adapter per
# domain (same rank, and about equal total parameters), 300 iterations each (about 100 per domain),
# tested on every domain's default split (every 3rd val frame scored, all streamed), 3 seeds each.
# Needs the two other worlds at the default world's size:
#   python tools/create_data.py world --out data/mini_world_night --lighting night --traffic-side left \
#       --seed 1 --domain night --scenes 36
#   python tools/create_data.py world --out data/mini_world_wide --rig wide-high --seed 2 --domain wide --scenes 36
# About 50 minutes per run on 2 CPU cores (33 training, 3 x 5 testing): 9 runs, a long job.
_base_ = ["./multi_domain_3.py"]
sweep = dict(
    name="multi_domain_3_300it",
    configs=["configs/multi_domain/bev_vlm_union-3_300it.py", "configs/multi_domain/bev_vlm_per-domain-3_300it.py",
             "configs/multi_domain/bev_vlm_per-domain-3_equal-params_300it.py"],
    seeds=[0, 1, 2],
    resamples=2000,
    test_options=[],
)

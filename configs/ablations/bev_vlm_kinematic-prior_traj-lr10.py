# The kinematic prior (configs/ablations/bev_vlm_kinematic-prior.py) with the trajectory head trained at
# ten times the base learning rate. Hypothesis: with the prior, the head's learned offsets add nothing
# (L2 equals the CTRA reference planner's) because 100 Adam steps at lr 1e-3 leave them underfitted,
# while an MLP of the ego status fitted over the same prior (tools/planning_baselines.py, ego_mlp)
# does better than CTRA.
_base_ = ["./bev_vlm_kinematic-prior.py"]
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={"traj_head": dict(lr_mult=10.0)}))

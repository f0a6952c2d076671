# The kinematic prior (configs/ablations/bev_vlm_kinematic-prior.py) with the learned offsets starting at
# exactly zero (the last layer of each offset path zero-initialised): the untrained head is the CTRA
# reference planner itself. With random initial offsets the kinematic prior's L2 equals CTRA's, and a
# ten times higher head learning rate made it worse (kinematic-prior_traj-lr10): the offsets' start,
# not their learning rate, is the next suspect.
_base_ = ["./bev_vlm_kinematic-prior.py"]
model = dict(traj_head=dict(zero_init_offsets=True))

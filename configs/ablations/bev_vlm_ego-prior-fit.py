# The default with the driving command as an input of its trajectory head (bev_vlm_command-input.py)
# whose plan starts from a FITTED ego-status planner instead of CTRA alone: a frozen MLP (two hidden
# layers of 64, traj_head.fitted_prior_hidden) from the ego status and the command to offsets over
# CTRA, fitted on the training frames' ego states and recorded futures before stage 2's first
# iteration (bevlm.engine.EgoPriorFitHook: the ego_mlp_cmd reference planner of
# tools/planning_baselines.py, seconds on a CPU, no images) and saved with the checkpoint. The learned
# offsets (trajectory-token readout and direct ego path) still start at zero, so the untrained head
# plans as that reference (0.331 m on the default split, against CTRA's 0.407 and the trained
# default's 0.367), and the 100 iterations have only the scene-dependent part left to learn.
#   python tools/sweep.py configs/sweeps/ego_prior_fit.py --seeds 0 1 --records docs/results/runs
_base_ = ["./bev_vlm_command-input.py"]
model = dict(traj_head=dict(fitted_prior_hidden=64))
custom_hooks = [dict(type="EgoPriorFitHook")]

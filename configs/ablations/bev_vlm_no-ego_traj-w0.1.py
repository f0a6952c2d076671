# No ego status (configs/ablations/bev_vlm_no-ego.py) with the trajectory loss at a tenth of its weight.
# Without the ego path and the kinematic prior the trajectory loss stays large, and its gradient on the
# shared weights (LoRA, projector) is as large as the language loss's (tools/grad_sources.py). AdamW
# normalises each weight's step, so the head's own weights, which only the trajectory loss reaches, learn
# as before, while on the shared weights the language loss leads again. Tests whether the QA drop of
# the no-ego model comes from the trajectory gradient (docs/research/trajectory.md).
_base_ = ["./bev_vlm_no-ego.py"]
model = dict(traj_head=dict(loss_weight=0.1))

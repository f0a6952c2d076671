# The default with the collision-action questions ("What actions taken by the ego vehicle can lead to a
# collision with <c1,CAM_BACK,...>?") trained more often: each training frame adds its questions of that
# family as 2 extra items (train_dataloader.dataset.family_repeats). The question: the default and the
# plan-line recipe answer "No such action ..." to nearly all of them (exact match about 0.26), while
# the training split's most frequent answer for the camera named in the question's own c-tag is right
# on 34 of the 48 test questions (docs/results/exact_match_families.md): does more exposure teach the
# LLM that dependence (about +0.06 of QA exact match if it did)?
#   python tools/sweep.py configs/sweeps/collision_actions.py --seeds 0 1 2 --records docs/results/runs
_base_ = ["../bev_vlm.py"]
train_dataloader = dict(dataset=dict(family_repeats=dict(collision_actions=2)))

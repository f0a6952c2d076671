# The planning answers conditioned on the model's own plan: the combined recipe
# (configs/ablations/bev_vlm_300it_det-more-scenes.py) with the trajectory head's plan written, in the
# answers' words, as one line after the trajectory queries (model.plan_text; bevlm.models.heads.plan_text):
#   Plan: The ego vehicle is going straight. The ego vehicle is driving slowly. Safe actions: ...
# so every question is answered with the plan in view. Read by the answers' rules, the combined
# recipe's plans give the right behaviour option and safe actions far more often than its LLM does
# (plan minus answers +0.264 [+0.053, +0.476] * over those questions; docs/results/plan_answers/).
# In training the line is written inside the LLM's forward from the query states of the same pass
# (HFCausalLM.forward_train(insert=...); the three seeds below were trained with a first pass over the
# prefix instead, with equal losses and gradients: tested), at test time from the plan just made (the
# prefix cache is extended by the line). The default (configs/bev_vlm.py) has the line since 2026-12-07.
# Three seeds, each against the combined recipe's same seed (docs/research/plan_text.md): QA exact match
# 0.447 -> 0.521 ± 0.005 (+0.074 [+0.019, +0.126] *), GPT-free 0.296 -> 0.326 ± 0.0004 (+0.030
# [+0.009, +0.055] *), the plan unchanged.
#   python tools/sweep.py configs/sweeps/det_scenes.py --seeds 0 1 2 --only bev_vlm_300it_det-more-scenes_plan-text
_base_ = ["./bev_vlm_300it_det-more-scenes.py"]
model = dict(plan_text=dict(num_tokens=48))

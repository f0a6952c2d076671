# Ablation: 36 learned prompt tokens after the visual tokens (prompt tuning). A random vision side
# gives nearly constant visual tokens that act as a 36-token soft prompt, through which the answer
# style is fitted quickly; the stage-1 vision side gives frame-dependent tokens instead
# (docs/research/perception_first.md). This gives the pretrained model such a prompt as well.
_base_ = ["../bev_vlm.py"]
model = dict(num_prompt_tokens=36)

# The default with the questions the official test asks as multiple choice trained as the test asks
# them (option list + letter, the options shuffled with mc_seed=0) instead of on their free-form
# answers. Tested the default way (each option's text scored by its likelihood as the answer), so the
# letter-trained model never saw a behaviour answer's text (docs/research/multiple_choice.md).
_base_ = ["../bev_vlm.py"]
train_dataloader = dict(dataset=dict(mc_seed=0))

# The ego status also as text in the prefix (bevlm.models.heads.ego_text): speed, acceleration and yaw
# rate, and what they imply over 3 s at constant turn rate and acceleration, as one 64-token line after
# the visual tokens, e.g. "Ego: 8.2 m/s, speeding up 0.3 m/s2, turning left 1.5 deg/s. In 3 s at this
# rate: 26 m, 5 deg left." The learned ego token stays. The question: does the LLM answer the questions
# about its own motion (behaviour) better when it reads its status in words and numbers?
_base_ = ["../bev_vlm.py"]
model = dict(ego_text=dict(horizon_s=3.0, num_tokens=64))

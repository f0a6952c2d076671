# The default with grounded questions: each c-tag of a question the LLM reads is followed by the ego-frame
# position of the detection it names, "<c1,CAM_BACK,712.3,455.1> (8 m behind, 1 m left)", read off the
# frozen stage-1 head's detections that the detections line already decodes
# (bevlm.models.heads.question_grounding; detections, not ground truth, in training as at test time).
# The question: the collision-action answers follow where the named object stands, and every run so far
# answers "No such action ..." to nearly all of them (exact match 0.25). Applying the world's own answer
# rule to the detected position of the tag's object (radius 40 px, score >= 0.1, the default's stage-1
# detector) is right on 39 / 48 = 0.81 of the test questions: the position is there to be read.
#   python tools/sweep.py configs/sweeps/grounding.py --seeds 0 1 2 --records docs/results/runs
_base_ = ["../bev_vlm.py"]
model = dict(question_grounding=dict(radius=40.0, score_thr=0.1))

# The default without detections as text: the BEV tokens alone in the prefix (no stage-1 detection
# head in the model, no "Detected: ..." text after the visual tokens). The question it answers: what
# the detector's c-tags add to the key-object answers (match F1, tag accuracy) and what the 128 more
# prefix tokens cost (docs/research/perception_text.md).
_base_ = ["../bev_vlm.py"]
model = dict(det_head=None, perception_text=None)

# The detections line with a motion word per object, from the stage-1 detector's velocity
# ("car 9 m moving <c1,...>" / "... stopped <c2,...>"; perception_text.motion_speed, m/s): a
# signal for DriveLM's moving-status question that has to come from the BEV. Starts from the
# longer 2-frame stage 1 (configs/ablations/bev_vlm_det-q2-3k.py); compare with that config to see
# what the words add. 0.5 m/s is the mini world's own threshold between "Stopped" and moving (of
# the future mean speed).
_base_ = ["./bev_vlm_det-q2-3k.py"]
model = dict(perception_text=dict(motion_speed=0.5))

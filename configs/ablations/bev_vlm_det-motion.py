# The detections line with a motion word per object, from the stage-1 detector's velocity
# ("car 9 m moving <c1,...>" / "... stopped <c2,...>"; perception_text.motion_speed, m/s): a
# signal for DriveLM's moving-status question that has to come from the BEV. Starts from the
# 2-frame-queue stage 1 (configs/ablations/bev_vlm_det-queue-2.py, whose velocity is meaningful);
# compare with that config to see what the words add. 0.5 m/s is the mini world's own threshold
# between "Stopped" and moving (of the future mean speed).
_base_ = ["./bev_vlm_det-queue-2.py"]
model = dict(perception_text=dict(motion_speed=0.5))

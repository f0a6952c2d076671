# Main recipe: BEV-VLM on the generated mini world, trained on a 2-core CPU.
_base_ = [
    "_base_/models/bev_vlm.py",
    "_base_/datasets/mini_world.py",
    "_base_/schedules/cpu_short.py",
    "_base_/default_runtime.py",
]

# No validation loop during training: mmengine's IterBasedTrainLoop would also validate at the
# last iteration, which on a CPU costs as much as the training itself. tools/test.py evaluates
# the test split (the val scenes) instead.
val_dataloader = None
val_evaluator = None

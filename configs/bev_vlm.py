# Main recipe: BEV-VLM on the generated mini world, trained on a 2-core CPU.
_base_ = [
    "_base_/models/bev_vlm.py",
    "_base_/datasets/mini_world.py",
    "_base_/schedules/cpu_short.py",
    "_base_/default_runtime.py",
]

"""One small generated world per test session (2 scenes x 8 frames at 160x90)."""
import json
import os

import pytest

from bevlm.world import WorldConfig, generate_world

SMALL = WorldConfig(frames_per_scene=8, image_size=(160, 90))


def load_world(out: str, summary: dict, config: WorldConfig) -> dict:
    """A generated world's DriveLM QA (both splits) and ground truth, as the ``world`` fixture holds them."""
    drivelm = {}
    for split in ("train", "val"):
        with open(os.path.join(out, f"drivelm_{split}.json")) as f:
            drivelm.update(json.load(f))
    with open(os.path.join(out, "world_gt.json")) as f:
        gt = json.load(f)
    return {"root": out, "summary": summary, "drivelm": drivelm, "gt": gt, "config": config}


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("mini_world"))
    return load_world(out, generate_world(out, num_scenes=2, seed=3, config=SMALL, progress=False), SMALL)


@pytest.fixture(scope="session")
def nusc(world):
    from nuscenes.nuscenes import NuScenes

    return NuScenes(version="v1.0-mini", dataroot=world["root"], verbose=False)

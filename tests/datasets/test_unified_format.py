"""The unified sample format: every source converts into it, validates, and its DriveLM part
round-trips to the DriveLM JSON it was built from."""
import os
import pickle

import pytest

from bevlm.datasets.converters import build_drivelm_only_infos, create_nuscenes_infos
from bevlm.datasets.drivelm_io import load_drivelm
from bevlm.datasets.unified_format import InfoFormatError, infos_to_drivelm, validate_infos
from tests.datasets.conftest import SAMPLE_IMAGES, SAMPLE_JSON


def _load(path):
    with open(path, "rb") as f:
        return pickle.load(f)


def _same_drivelm(rebuilt: dict, original: dict):
    assert set(rebuilt) == set(original)
    for scene, content in original.items():
        assert rebuilt[scene]["scene_description"] == content.get("scene_description", "")
        assert rebuilt[scene]["key_frames"] == content["key_frames"]


def test_mini_world_round_trip(tiny_world):
    for split in ("train", "val"):
        data = _load(os.path.join(tiny_world, "infos", f"bevlm_infos_{split}.pkl"))
        validate_infos(data)
        _same_drivelm(infos_to_drivelm(data["data_list"]), load_drivelm(os.path.join(tiny_world, f"drivelm_{split}.json")))


def test_second_domain_round_trip(tmp_path):
    """A night, left-hand-traffic world (the second generated domain) in the same format."""
    from bevlm.world import WorldConfig, generate_world

    out = str(tmp_path / "night_left")
    config = WorldConfig(frames_per_scene=2, image_size=(96, 54), val_fraction=0.5, traffic_side="left",
                         lighting="night")
    generate_world(out, num_scenes=2, seed=1, config=config, progress=False)
    written = create_nuscenes_infos(out, config.version, os.path.join(out, "infos"),
                                    {"train": os.path.join(out, "drivelm_train.json")}, domain="night_left")
    data = _load(written["train"])
    validate_infos(data)
    assert data["metainfo"]["domain"] == "night_left"
    _same_drivelm(infos_to_drivelm(data["data_list"]), load_drivelm(os.path.join(out, "drivelm_train.json")))


def test_drivelm_sample_round_trip():
    infos = build_drivelm_only_infos(SAMPLE_JSON, SAMPLE_IMAGES)
    validate_infos({"metainfo": {"classes": (), "dataset": "drivelm_only", "info_version": "bevlm-1.0"},
                    "data_list": infos})
    _same_drivelm(infos_to_drivelm(infos), load_drivelm(SAMPLE_JSON))


def test_validation_names_file_key_and_fix(tiny_world):
    data = _load(os.path.join(tiny_world, "infos", "bevlm_infos_val.pkl"))
    del data["data_list"][1]["ego_status"]
    with pytest.raises(InfoFormatError, match=r"x\.pkl: data_list\[1\].*'ego_status'.*Fix"):
        validate_infos(data, "x.pkl")
    data = _load(os.path.join(tiny_world, "infos", "bevlm_infos_val.pkl"))
    del data["data_list"][0]["images"]["CAM_BACK"]["cam2img"]
    with pytest.raises(InfoFormatError, match=r"CAM_BACK.*cam2img"):
        validate_infos(data, "x.pkl")
    with pytest.raises(InfoFormatError, match="metainfo"):
        validate_infos({"data_list": []}, "x.pkl")


def test_concat_of_domains_tags_samples(tiny_world):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from bevlm.registry import DATASETS
    from tests.conftest import REPO

    init_default_scope("bevlm")
    cfg = Config.fromfile(os.path.join(REPO, "configs", "multi_domain", "bev_vlm_union.py"))
    ds_cfg = cfg.train_dataloader.dataset.to_dict()
    for part in ds_cfg["datasets"]:
        part.update(data_root=f"{tiny_world}/", pipeline=Config.fromfile(
            os.path.join(REPO, "configs", "bev_vlm_tiny.py")).pipeline)
    ds = DATASETS.build(ds_cfg)
    half = len(ds) // 2
    assert ds[0]["data_samples"].metainfo["domain"] == "day"
    assert ds[half]["data_samples"].metainfo["domain"] == "night"

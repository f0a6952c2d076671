"""tools/create_data.py drivelm-split: train / val by scene, deterministic, nothing lost or shared."""
import copy
import json
import os
import subprocess
import sys

import pytest

from bevlm.datasets.drivelm_io import split_drivelm_by_scene
from tests.paths import DRIVELM_SAMPLE_JSON

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _many_scenes(n=20):
    """The real sample's scenes, copied under n scene tokens (frame tokens made unique per scene)."""
    with open(DRIVELM_SAMPLE_JSON) as f:
        scenes = list(json.load(f).values())
    data = {}
    for i in range(n):
        s = copy.deepcopy(scenes[i % len(scenes)])
        s["key_frames"] = {f"{i:02d}{tok[2:]}": fr for tok, fr in s["key_frames"].items()}
        data[f"scene{i:02d}"] = s
    return data


def test_split_is_by_scene_complete_and_deterministic():
    data = _many_scenes(20)
    train, val = split_drivelm_by_scene(data, 0.2, seed=0)
    assert len(val) == 4 and len(train) == 16 and not set(train) & set(val)
    assert set(train) | set(val) == set(data)
    assert all(train[k] is data[k] for k in train) and all(val[k] is data[k] for k in val)
    # the key order of the file does not matter; the seed does
    reordered = dict(reversed(list(data.items())))
    assert set(split_drivelm_by_scene(reordered, 0.2, seed=0)[1]) == set(val)
    assert set(split_drivelm_by_scene(data, 0.2, seed=1)[1]) != set(val)
    assert len(split_drivelm_by_scene(data, 0.01)[1]) == 1  # at least one val scene
    assert len(split_drivelm_by_scene(data, 0.99)[0]) == 1  # at least one train scene
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="val_fraction must be in"):
            split_drivelm_by_scene(data, bad)
    with pytest.raises(ValueError, match="at least 2 scenes"):
        split_drivelm_by_scene({"a": data["scene00"]}, 0.5)


def test_tool_writes_both_files_and_refuses_to_overwrite(tmp_path):
    src = tmp_path / "all.json"
    src.write_text(json.dumps(_many_scenes(10)))
    out = tmp_path / "split"
    cmd = [sys.executable, os.path.join(REPO, "tools", "create_data.py"), "drivelm-split", "--json", str(src),
           "--out", str(out), "--val-fraction", "0.3"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    train = json.loads((out / "drivelm_train.json").read_text())
    val = json.loads((out / "drivelm_val.json").read_text())
    assert len(val) == 3 and len(train) == 7 and {**train, **val} == json.loads(src.read_text())
    before = (out / "drivelm_val.json").read_text()
    r = subprocess.run(cmd + ["--seed", "5"], capture_output=True, text=True)
    assert r.returncode != 0 and "exists; pass --force" in r.stderr
    assert (out / "drivelm_val.json").read_text() == before
    # a bad input stops before anything is written
    bad = tmp_path / "bad.json"
    bad.write_text('{"scene": {"key_frames": {"f": {"QA": {}}}}}')
    r = subprocess.run(cmd[:5] + [str(bad), "--out", str(tmp_path / "none")], capture_output=True, text=True)
    assert r.returncode != 0 and str(bad) in r.stderr and not (tmp_path / "none").exists()

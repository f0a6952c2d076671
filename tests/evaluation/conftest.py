"""Fixtures of the evaluation tests: the real DriveLM v1.1 sample (9 frames, 790 QA)."""
import json
import os

import pytest

SAMPLE = "/work/shared/data/drivelm_sample/v1_1_train_sample.json"


def _find_sample() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    for path in (os.path.join(here, "..", "..", "..", "shared", "data", "drivelm_sample",
                              "v1_1_train_sample.json"), SAMPLE):
        if os.path.isfile(path):
            return os.path.abspath(path)
    raise FileNotFoundError(f"DriveLM sample not found at {SAMPLE}. Fix: place v1_1_train_sample.json there")


@pytest.fixture(scope="session")
def sample_path() -> str:
    return _find_sample()


@pytest.fixture(scope="session")
def sample(sample_path) -> dict:
    with open(sample_path, encoding="utf-8") as f:
        return json.load(f)

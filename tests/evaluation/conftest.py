"""Fixtures of the evaluation tests: the real DriveLM v1.1 sample (9 frames, 790 QA)."""
import json

import pytest

from tests.paths import DRIVELM_SAMPLE_JSON


@pytest.fixture(scope="session")
def sample_path() -> str:
    return DRIVELM_SAMPLE_JSON


@pytest.fixture(scope="session")
def sample(sample_path) -> dict:
    with open(sample_path, encoding="utf-8") as f:
        return json.load(f)

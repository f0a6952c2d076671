"""Paths of the data the tests ship (under ``tests/data/``; see its ATTRIBUTION.md)."""
import os

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
#: The real DriveLM-nuScenes v1.1 training sample (9 key frames, 790 QA) and its 54 camera images.
DRIVELM_SAMPLE_ROOT = os.path.join(DATA_DIR, "drivelm_sample")
DRIVELM_SAMPLE_JSON = os.path.join(DRIVELM_SAMPLE_ROOT, "v1_1_train_sample.json")
DRIVELM_SAMPLE_IMAGES = os.path.join(DRIVELM_SAMPLE_ROOT, "nuscenes")

"""Reading and validating DriveLM v1.1 QA files (the schema of DRIVELM_SPEC.md section 1).

Only this module and :mod:`bevlm.datasets.converters` know the on-disk DriveLM layout;
everything downstream sees validated python dicts.
"""
from __future__ import annotations

import json
import os
from typing import Iterator

from bevlm.structures.qa_families import CTAG_RE

STAGES = ("perception", "prediction", "planning", "behavior")
_FRAME_KEYS = ("key_object_infos", "QA", "image_paths")
_OBJECT_KEYS = ("Category", "Status", "Visual_description", "2d_bbox")


class DriveLMFormatError(ValueError):
    """A DriveLM file does not follow the v1.1 schema; the message names file, key and fix."""


def _fail(path: str, where: str, what: str, fix: str) -> None:
    raise DriveLMFormatError(f"{path}: {where}: {what}. Fix: {fix}")


def load_drivelm(path: str) -> dict:
    """Load a DriveLM v1.1 JSON and validate its schema.

    Args:
        path: path of e.g. ``v1_1_train_nus.json`` or a generated ``drivelm_train.json``.

    Returns:
        The parsed dict ``{scene_token: {"scene_description", "key_frames": {...}}}``.

    Raises:
        FileNotFoundError: the file does not exist.
        DriveLMFormatError: invalid JSON, or a scene/frame/QA/object misses a key.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: DriveLM QA file not found. Fix: pass the path of the DriveLM "
                                f"v1.1 JSON (or run tools/create_data.py world to generate one)")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        _fail(path, f"line {e.lineno}", f"invalid JSON ({e.msg})",
              "re-download or regenerate the file; it is probably truncated")
    if not isinstance(data, dict):
        _fail(path, "top level", "expected an object {scene_token: scene}", "use a DriveLM v1.1 file")
    for scene_token, scene in data.items():
        if "key_frames" not in scene:
            _fail(path, f"scene {scene_token}", "missing key 'key_frames'", "every scene needs 'key_frames'")
        for frame_token, frame in scene["key_frames"].items():
            where = f"scene {scene_token} / frame {frame_token}"
            for key in _FRAME_KEYS:
                if key not in frame:
                    _fail(path, where, f"missing key '{key}'",
                          f"every key frame needs {list(_FRAME_KEYS)}")
            for stage in STAGES:
                for i, qa in enumerate(frame["QA"].get(stage, [])):
                    for key in ("Q", "A"):
                        if key not in qa:
                            _fail(path, f"{where} / QA.{stage}[{i}]", f"missing key '{key}'",
                                  "every QA item needs 'Q' and 'A'")
            for tag, info in frame["key_object_infos"].items():
                if not CTAG_RE.fullmatch(tag):
                    _fail(path, f"{where} / key_object_infos", f"malformed c-tag {tag!r}",
                          "c-tags look like <c1,CAM_FRONT,812.3,455.1>")
                for key in _OBJECT_KEYS:
                    if key not in info:
                        _fail(path, f"{where} / key_object_infos[{tag}]", f"missing key '{key}'",
                              f"every key object needs {list(_OBJECT_KEYS)}")
    return data


def iter_frames(data: dict) -> Iterator[tuple[str, str, dict, dict]]:
    """Yield ``(scene_token, frame_token, frame, scene)`` in file order (NOT time order)."""
    for scene_token, scene in data.items():
        for frame_token, frame in scene["key_frames"].items():
            yield scene_token, frame_token, frame, scene


def flatten_qa(frame: dict) -> list[dict]:
    """The frame's QA as one list in the official order (perception, prediction, planning, behavior).

    Each item: ``{"Q", "A", "stage", "index"}``; ``index`` is the ``i`` of the official
    id ``f"{scene}_{frame}_{i}"``.
    """
    out = []
    for stage in STAGES:
        for qa in frame["QA"].get(stage, []):
            out.append({"Q": qa["Q"], "A": qa["A"], "stage": stage, "index": len(out)})
    return out


def parse_ctags(text: str) -> list[tuple[int, str, float, float]]:
    """All c-tags in ``text`` as ``(n, camera, x, y)``."""
    return [(int(n), cam, float(x), float(y)) for n, cam, x, y in CTAG_RE.findall(text)]


def resolve_image_path(path: str, image_root: str) -> str:
    """Resolve a DriveLM ``image_paths`` entry (``../nuscenes/samples/CAM/x.jpg``).

    The official tools replace the leading ``..`` by their data folder; here the part from
    ``samples/`` on is joined to ``image_root`` (the folder that holds ``samples/``).
    """
    norm = path.replace("\\", "/")
    idx = norm.find("samples/")
    rel = norm[idx:] if idx >= 0 else norm.lstrip("./")
    return os.path.join(image_root, rel)

"""Reading and validating DriveLM v1.1 QA files (the schema of docs/drivelm_spec.md section 1).

Only this module and :mod:`bevlm.datasets.converters` know the on-disk DriveLM layout;
everything downstream sees validated python dicts.
"""
from __future__ import annotations

import json
import logging
import os
import re
from typing import Iterator

from bevlm.structures import CAMERA_NAMES
from bevlm.structures.qa_families import CTAG_RE

logger = logging.getLogger(__name__)

STAGES = ("perception", "prediction", "planning", "behavior")
_FRAME_KEYS = ("key_object_infos", "QA", "image_paths")
_OBJECT_KEYS = ("Category", "Status", "Visual_description", "2d_bbox")
#: Anything shaped like the start of a c-tag, to catch malformed ones (``<c1,CAM_FRONT,abc>``).
_LOOSE_CTAG_RE = re.compile(r"<c\d+,[^<>]*>")


class DriveLMFormatError(ValueError):
    """A DriveLM file does not follow the v1.1 schema; the message names file, key and fix."""


def _fail(path: str, where: str, what: str, fix: str) -> None:
    raise DriveLMFormatError(f"{path}: {where}: {what}. Fix: {fix}")


def load_drivelm(path: str, skip_bad: bool = False) -> dict:
    """Load a DriveLM v1.1 JSON and validate it.

    Checked for every key frame: the schema (scene / frame / QA / object keys and types: ``QA`` a
    dict of stage lists, ``Q`` and ``A`` strings), at least one QA pair, and every c-tag in the key
    objects, questions and answers (well formed, one of the six cameras, non-negative pixel
    coordinates; :func:`check_ctag_bounds` checks them against the image size where it is known).

    Args:
        path: path of e.g. ``v1_1_train_nus.json`` or a generated ``drivelm_train.json``.
        skip_bad: drop the frames that fail a frame-level check (logged with a count and the first
            reasons) instead of raising; scenes left without frames are dropped too.

    Returns:
        The parsed dict ``{scene_token: {"scene_description", "key_frames": {...}}}``.

    Raises:
        FileNotFoundError: the file does not exist.
        DriveLMFormatError: invalid JSON or a failed check (file, scene, frame, key and fix named).
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
    dropped = []
    for scene_token in list(data):
        scene = data[scene_token]
        if not isinstance(scene, dict) or not isinstance(scene.get("key_frames"), dict):
            _fail(path, f"scene {scene_token}", "missing or non-object 'key_frames'",
                  "every scene needs 'key_frames': {frame_token: frame}")
        for frame_token in list(scene["key_frames"]):
            where = f"scene {scene_token} / frame {frame_token}"
            try:
                _check_frame(path, where, scene["key_frames"][frame_token])
            except DriveLMFormatError as e:
                if not skip_bad:
                    raise
                dropped.append(str(e))
                del scene["key_frames"][frame_token]
        if not scene["key_frames"]:
            del data[scene_token]
    if dropped:
        logger.warning("%s: dropped %d bad key frames (--skip-bad); first: %s", path, len(dropped),
                       "; ".join(dropped[:3]))
    return data


def _check_frame(path: str, where: str, frame) -> None:
    """Schema, types, non-empty QA and c-tags of one key frame (raises :class:`DriveLMFormatError`)."""
    if not isinstance(frame, dict):
        _fail(path, where, f"a key frame must be an object, got {type(frame).__name__}",
              f"every key frame is an object with {list(_FRAME_KEYS)}")
    for key in _FRAME_KEYS:
        if key not in frame:
            _fail(path, where, f"missing key '{key}'", f"every key frame needs {list(_FRAME_KEYS)}")
    if not isinstance(frame["QA"], dict):
        _fail(path, f"{where} / QA", f"expected an object {{stage: [QA]}}, got {type(frame['QA']).__name__}",
              f"QA maps the stages {list(STAGES)} to lists of {{'Q', 'A'}} items")
    n_qa = 0
    for stage, items in frame["QA"].items():
        if stage not in STAGES or not isinstance(items, list):
            _fail(path, f"{where} / QA.{stage}", "unknown stage or not a list",
                  f"QA keys are among {list(STAGES)}, each a list of {{'Q', 'A'}} items")
        for i, qa in enumerate(items):
            for key in ("Q", "A"):
                if not isinstance(qa, dict) or key not in qa:
                    _fail(path, f"{where} / QA.{stage}[{i}]", f"missing key '{key}'",
                          "every QA item needs 'Q' and 'A'")
                if not isinstance(qa[key], str):
                    _fail(path, f"{where} / QA.{stage}[{i}].{key}",
                          f"expected a string, got {type(qa[key]).__name__}",
                          "questions and answers are strings")
                _check_ctags(path, f"{where} / QA.{stage}[{i}].{key}", qa[key])
            n_qa += 1
    if n_qa == 0:
        _fail(path, f"{where} / QA", "no question / answer pair", "drop the frame (--skip-bad) or add its QA")
    if not isinstance(frame["key_object_infos"], dict):
        _fail(path, f"{where} / key_object_infos", "expected an object {c-tag: info}",
              "key_object_infos maps c-tags to object infos")
    for tag, info in frame["key_object_infos"].items():
        if not CTAG_RE.fullmatch(tag):
            _fail(path, f"{where} / key_object_infos", f"malformed c-tag {tag!r}",
                  "c-tags look like <c1,CAM_FRONT,812.3,455.1>")
        _check_ctags(path, f"{where} / key_object_infos", tag)
        for key in _OBJECT_KEYS:
            if not isinstance(info, dict) or key not in info:
                _fail(path, f"{where} / key_object_infos[{tag}]", f"missing key '{key}'",
                      f"every key object needs {list(_OBJECT_KEYS)}")


def _check_ctags(path: str, where: str, text: str) -> None:
    for tag in _LOOSE_CTAG_RE.findall(text):
        m = CTAG_RE.fullmatch(tag)
        if not m:
            _fail(path, where, f"malformed c-tag {tag!r}", "c-tags look like <c1,CAM_FRONT,812.3,455.1>")
        if m.group(2) not in CAMERA_NAMES:
            _fail(path, where, f"c-tag {tag!r} names camera {m.group(2)!r}", f"use one of {list(CAMERA_NAMES)}")
        if float(m.group(3)) < 0 or float(m.group(4)) < 0:
            _fail(path, where, f"c-tag {tag!r} has a negative pixel coordinate",
                  "c-tag points are pixels of the camera image (x, y >= 0)")


def frame_ctags(frame: dict) -> list[tuple[str, str]]:
    """``(where, c-tag)`` of every c-tag in a key frame's objects, questions and answers."""
    out = [("key_object_infos", tag) for tag in frame["key_object_infos"]]
    for stage, items in frame["QA"].items():
        for i, qa in enumerate(items):
            for key in ("Q", "A"):
                out += [(f"QA.{stage}[{i}].{key}", m.group(0)) for m in CTAG_RE.finditer(qa[key])]
    return out


def check_ctag_bounds(path: str, where: str, frame: dict, image_sizes: dict) -> None:
    """Every c-tag point of ``frame`` lies inside its camera's image.

    Args:
        path, where: named in the error (the source file; scene / frame).
        frame: a validated key frame.
        image_sizes: ``{camera: (width, height)}`` of the images the c-tags refer to.

    Raises:
        DriveLMFormatError: a point outside ``[0, W] x [0, H]`` of its camera.
    """
    for key, tag in frame_ctags(frame):
        m = CTAG_RE.fullmatch(tag)
        w, h = image_sizes[m.group(2)]
        if not (0 <= float(m.group(3)) <= w and 0 <= float(m.group(4)) <= h):
            _fail(path, f"{where} / {key}", f"c-tag {tag!r} lies outside the {w}x{h} image of {m.group(2)}",
                  "c-tag points are pixels of the stored camera image; rescale them to its size")


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
    """Resolve a DriveLM ``image_paths`` entry (``../nuscenes/samples/CAM/x.jpg``) under ``image_root``.

    The official tools replace the leading ``..`` by their data folder; here the part from
    ``samples/`` on is joined to ``image_root`` (the folder that holds ``samples/``).

    Raises:
        DriveLMFormatError: the resolved path leaves ``image_root`` (``..`` after ``samples/``, or an
            absolute path without ``samples/``).
    """
    norm = path.replace("\\", "/")
    idx = norm.find("samples/")
    rel = norm[idx:] if idx >= 0 else norm.lstrip("./")
    full = os.path.normpath(os.path.join(image_root, rel))
    root = os.path.normpath(os.path.abspath(image_root))
    if os.path.commonpath([os.path.abspath(full), root]) != root:
        raise DriveLMFormatError(f"image path {path!r} resolves to {full}, outside the image root {image_root}. "
                                 f"Fix: image paths stay inside the folder that holds samples/ (no '..' after it)")
    return full


def split_drivelm_by_scene(data: dict, val_fraction: float = 0.1, seed: int = 0) -> tuple[dict, dict]:
    """Split a DriveLM file into train / val by scene (frames of a scene stay together).

    The public DriveLM v1.1 release has answers for its train split only; a validation split must
    come out of it, and frames of one scene are too correlated to be split across the two. Scenes
    are ordered by ``sha256(f"{seed}:{scene_token}")`` and the first ``round(n * val_fraction)``
    (at least one, at most n - 1) go to val: deterministic, independent of the file's key order,
    and a scene's rank does not depend on the other scenes.

    Args:
        data: a loaded DriveLM dict (:func:`load_drivelm`).
        val_fraction: share of the scenes in val, in (0, 1).
        seed: another seed gives another split.

    Returns:
        ``(train, val)``, each ``{scene_token: scene}`` in the input's key order.

    Raises:
        ValueError: ``val_fraction`` outside (0, 1) or fewer than two scenes.
    """
    import hashlib

    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if len(data) < 2:
        raise ValueError(f"a split by scene needs at least 2 scenes, the file has {len(data)}")
    rank = sorted(data, key=lambda token: hashlib.sha256(f"{seed}:{token}".encode()).hexdigest())
    n_val = min(max(round(len(data) * val_fraction), 1), len(data) - 1)
    val_tokens = set(rank[:n_val])
    train = {k: v for k, v in data.items() if k not in val_tokens}
    val = {k: v for k, v in data.items() if k in val_tokens}
    return train, val


def load_drivelm_questions(path: str) -> dict:
    """Load a questions-only DriveLM test file and validate it.

    The challenge's test questions (``v1_1_val_nus_q_only.json``) have the layout of the
    ``test_eval.json`` that ``convert_data.py`` writes, without the answers:
    ``{scene: {"key_frames": {frame: {"QA": {stage: [{"Q": str, "tag": [int, ...]}, ...]},
    "image_paths": {camera: path}}}}}``. Multiple-choice questions already carry their options. A
    file with answers (a ``test_eval.json``) is accepted too; its answers are ignored.

    Args:
        path: the file.

    Returns:
        The parsed dict (unchanged).

    Raises:
        FileNotFoundError: the file does not exist.
        DriveLMFormatError: invalid JSON or a failed check (file, scene, frame, key and fix named).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: DriveLM test questions file not found. Fix: pass the questions-only "
                                f"file (e.g. v1_1_val_nus_q_only.json, or one written by tools/create_data.py "
                                f"drivelm-questions)")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DriveLMFormatError(f"{path}: line {e.lineno}: invalid JSON ({e.msg}). Fix: download or write "
                                 f"the file again; it is probably truncated") from e
    if not isinstance(data, dict) or not data:
        _fail(path, "top level", "expected a non-empty dict {scene_token: {'key_frames': ...}}",
              "pass the questions-only test file, not output.json or a submission")
    n_questions = 0
    for scene_token, scene in data.items():
        if not isinstance(scene, dict) or not isinstance(scene.get("key_frames"), dict):
            _fail(path, f"scene {scene_token}", "missing dict 'key_frames'",
                  "each scene must be {'key_frames': {frame_token: {...}}}")
        for frame_token, frame in scene["key_frames"].items():
            where = f"scene {scene_token} / frame {frame_token}"
            qa = frame.get("QA") if isinstance(frame, dict) else None
            if not isinstance(qa, dict):
                _fail(path, where, "missing dict 'QA'", "each frame needs {'QA': {stage: [questions]}}")
            unknown = sorted(set(qa) - set(STAGES))
            if unknown:
                _fail(path, where, f"'QA' has unknown stage(s) {unknown}", f"use the stages {list(STAGES)}")
            for stage in STAGES:
                items = qa.get(stage, [])
                if not isinstance(items, list):
                    _fail(path, f"{where} / QA.{stage}", f"expected a list, got {type(items).__name__}",
                          "give each stage a list of {'Q': ..., 'tag': [...]} items")
                for k, item in enumerate(items):
                    w = f"{where} / QA.{stage}[{k}]"
                    if not isinstance(item, dict) or not isinstance(item.get("Q"), str) or not item["Q"].strip():
                        _fail(path, w, "missing non-empty string 'Q'", "every test item needs its question text")
                    tag = item.get("tag", [])
                    if not isinstance(tag, list) or not all(isinstance(t, int) for t in tag):
                        _fail(path, w, f"'tag' must be a list of ints, got {tag!r}",
                              "use the tags of the official test format (0 accuracy, 1 GPT, 2 language, 3 match)")
                    _check_ctags(path, w + ".Q", item["Q"])
                    n_questions += 1
    if n_questions == 0:
        _fail(path, "all frames", "no questions", "pass a test file with questions")
    return data


def iter_test_questions(data: dict) -> Iterator[tuple[str, str, int, str, dict]]:
    """Yield ``(scene_token, frame_token, i, stage, item)`` of a test file in the official order.

    ``i`` indexes the frame's perception+prediction+planning+behavior test items concatenated:
    the official id is ``f"{scene_token}_{frame_token}_{i}"`` (``convert2llama.py``).
    """
    for scene_token, scene in data.items():
        for frame_token, frame in scene["key_frames"].items():
            i = 0
            for stage in STAGES:
                for item in frame["QA"].get(stage, []):
                    yield scene_token, frame_token, i, stage, item
                    i += 1

"""The DriveLM challenge test set, built from ground-truth frames (docs/drivelm_spec.md section 4).

A port of the official ``challenge/extract_data.py`` (which QA of a frame are tested, with
which ``tag``) and ``challenge/convert_data.py`` (multiple-choice versions of the moving-status
and behavior questions). It produces the ``test_eval.json`` structure
``{scene: {"key_frames": {frame: {"QA": {stage: [QA + "tag"]}, "image_paths": {...}}}}}`` and
its official ids ``f"{scene}_{frame}_{i}"``, ``i`` indexing the frame's
perception+prediction+planning+behavior test QA concatenated. The file readers/writers are in
:mod:`.drivelm_files`.

Differences from the official scripts, all deliberate:

* ``convert_data.py`` is unseeded; here each frame draws its options from
  ``random.Random(f"{seed}/{scene}/{frame}")``, so the multiple-choice question of a frame does
  not depend on the order in which frames are processed (a model can be asked exactly the
  question the scorer later grades, one frame at a time, under any data sharding). The calls on
  the generator (``sample`` then ``shuffle``) are the official ones.
* Bad input raises :class:`DriveLMEvalError` naming the file, the key and the fix, where the
  official scripts raise a bare ``ValueError``/``KeyError``.
"""
from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass
from typing import Iterator

from ..structures.qa_families import MC_LETTERS, MC_SUFFIX, split_multiple_choice

STAGES = ("perception", "prediction", "planning", "behavior")

#: ``convert_data.py::rule_based1`` option universe (perception "moving status").
MOVING_STATUS_OPTIONS = ("Going ahead.", "Turn right.", "Turn left.", "Stopped.", "Back up.",
                         "Reverse parking.", "Drive backward.")

#: ``convert_data.py::rule_based2`` option universe (behavior), in the official list order.
BEHAVIOR_OPTIONS = (
    "The ego vehicle is slightly steering to the left. The ego vehicle is driving very fast.",
    "The ego vehicle is steering to the left. The ego vehicle is driving with normal speed.",
    "The ego vehicle is steering to the left. The ego vehicle is driving fast.",
    "The ego vehicle is slightly steering to the right. The ego vehicle is driving fast.",
    "The ego vehicle is going straight. The ego vehicle is driving slowly.",
    "The ego vehicle is going straight. The ego vehicle is driving with normal speed.",
    "The ego vehicle is slightly steering to the left. The ego vehicle is driving with normal speed.",
    "The ego vehicle is slightly steering to the left. The ego vehicle is driving slowly.",
    "The ego vehicle is slightly steering to the right. The ego vehicle is driving slowly.",
    "The ego vehicle is slightly steering to the right. The ego vehicle is driving very fast.",
    "The ego vehicle is steering to the right. The ego vehicle is driving fast.",
    "The ego vehicle is steering to the right. The ego vehicle is driving very fast.",
    "The ego vehicle is slightly steering to the left. The ego vehicle is driving fast.",
    "The ego vehicle is steering to the left. The ego vehicle is driving very fast.",
    "The ego vehicle is going straight. The ego vehicle is not moving.",
    "The ego vehicle is slightly steering to the right. The ego vehicle is driving with normal speed.",
    "The ego vehicle is steering to the right. The ego vehicle is driving slowly.",
    "The ego vehicle is steering to the right. The ego vehicle is driving with normal speed.",
    "The ego vehicle is going straight. The ego vehicle is driving very fast.",
    "The ego vehicle is going straight. The ego vehicle is driving fast.",
    "The ego vehicle is steering to the left. The ego vehicle is driving slowly.",
)

_MOVING_STATUS_Q = "What is the moving status of object".lower()


class DriveLMEvalError(ValueError):
    """Bad input to the DriveLM scorer; the message names the file/key and the fix."""


@dataclass(frozen=True)
class MCQuestion:
    """A multiple-choice test question as ``convert_data.py`` builds it.

    Attributes:
        question: the question with the option list appended (what the model is asked).
        answer: the correct letter, 'A'..'D' (the test-set GT, compared by raw equality).
        options: letter -> option text.
    """

    question: str
    answer: str
    options: dict

    def letter_of(self, text: str) -> str | None:
        """The letter whose option equals ``text.strip()``, or None."""
        for letter, option in self.options.items():
            if text.strip() == option:
                return letter
        return None


def _multiple_choice(question: str, answer: str, universe: tuple[str, ...], rng: random.Random,
                     where: str) -> dict:
    """``rule_based1``/``rule_based2`` of ``convert_data.py`` with an explicit generator."""
    rule = list(universe)
    if answer not in rule:
        raise DriveLMEvalError(
            f"{where}: GT answer {answer!r} is not one of the {len(universe)} options of the official "
            f"convert_data.py ({list(universe)}). Fix: correct the annotation, or drop this QA from "
            f"the GT file (the official script raises ValueError here)")
    rule.remove(answer)
    choices = rng.sample(rule, 3)
    choices.append(answer)
    rng.shuffle(choices)
    idx = choices.index(answer)
    question += (f"{MC_SUFFIX} A. {choices[0]} B. {choices[1]} C. {choices[2]} D. {choices[3]}")
    return {"Q": question, "A": MC_LETTERS[idx]}


def mc_question_for(qa: dict) -> MCQuestion | None:
    """Parse a test QA whose question carries the multiple-choice option list.

    Args:
        qa: a QA dict of ``test_eval.json`` (``Q`` with options appended, ``A`` a letter).

    Returns:
        The :class:`MCQuestion`, or None when ``qa['Q']`` has no option list.
    """
    parsed = split_multiple_choice(qa["Q"])
    if parsed is None:
        return None
    return MCQuestion(question=qa["Q"], answer=qa["A"], options=parsed[1])


def select_frame_qa(frame: dict, where: str = "frame") -> tuple[dict, list[int]]:
    """Port of ``extract_data.py`` for one frame: which QA are tested, with their ``tag``.

    Per frame (all rules take the *first* match, in list order):
    perception: the QA whose lower-cased answer contains every object's
    ``Visual_description.split('.')[0]`` -> ``[2]``; the first "What is the moving status of
    object" -> ``[0]``. prediction: the QA whose answer contains every c-tag -> ``[3]``; the
    first answer containing ``"yes"`` or ``"no"`` as a *substring* (so "notice" and "None."
    match) -> ``[0]``. planning: the first "What actions could the ego vehicle take", "lead to a
    collision" and "safe actions" questions -> ``[1]``. behavior: all -> ``[0]``.
    As in the official script, the tag is written into the QA dict in place, so a QA that two
    rules pick is listed twice, both times with the tag of the later rule.

    Args:
        frame: a DriveLM v1.1 key frame (``key_object_infos``, ``QA``, ``image_paths``).
        where: location used in error messages (e.g. ``"file.json: scene s / frame f"``).

    Returns:
        ``(test_frame, source_index)``: ``test_frame = {"QA": {stage: [QA]}, "image_paths"}``
        (a fresh copy; ``frame`` is not modified) and, for each test QA in the official id order,
        its index ``i`` in the frame's full perception+prediction+planning+behavior list.
    """
    for key in ("key_object_infos", "QA", "image_paths"):
        if key not in frame:
            raise DriveLMEvalError(f"{where}: missing key '{key}'. Fix: the test set is built from GT "
                                   f"DriveLM v1.1 frames that have 'key_object_infos', 'QA' and "
                                   f"'image_paths'")
    infos = frame["key_object_infos"]
    qa_all = copy.deepcopy({stage: frame["QA"].get(stage, []) for stage in STAGES})
    full_index, n = {}, 0
    for stage in STAGES:
        for qa in qa_all[stage]:
            full_index[id(qa)] = n
            n += 1
    classes = [info["Visual_description"].split(".")[0] for info in infos.values()]
    locations = list(infos.keys())
    out = {stage: [] for stage in STAGES}

    for qa in qa_all["perception"]:
        if all(cl.lower() in qa["A"].lower() for cl in classes):
            qa["tag"] = [2]
            out["perception"].append(qa)
            break
    for qa in qa_all["perception"]:
        if _MOVING_STATUS_Q in qa["Q"].lower():
            qa["tag"] = [0]
            out["perception"].append(qa)
            break
    for qa in qa_all["prediction"]:
        if all(loc.lower() in qa["A"].lower() for loc in locations):
            qa["tag"] = [3]
            out["prediction"].append(qa)
            break
    for qa in qa_all["prediction"]:
        if "yes" in qa["A"].lower() or "no" in qa["A"].lower():
            qa["tag"] = [0]
            out["prediction"].append(qa)
            break
    added = {"actions": False, "collision": False, "safe": False}
    for qa in qa_all["planning"]:
        q = qa["Q"].lower()
        for key, needle in (("actions", "What actions could the ego vehicle take".lower()),
                            ("collision", "lead to a collision"), ("safe", "safe actions")):
            if needle in q and not added[key]:
                qa["tag"] = [1]
                out["planning"].append(qa)
                added[key] = True
        if all(added.values()):
            break
    for qa in qa_all["behavior"]:
        qa["tag"] = [0]
        out["behavior"].append(qa)

    source_index = [full_index[id(qa)] for stage in STAGES for qa in out[stage]]
    # The official pipeline writes test.json and reads it back: shared dicts become copies.
    test_frame = json.loads(json.dumps({"QA": out, "image_paths": frame["image_paths"]}))
    return test_frame, source_index


def convert_frame_mc(test_frame: dict, rng: random.Random, where: str = "frame") -> dict:
    """Port of ``convert_data.py::loop_test`` for one frame (in place, also returned).

    Every perception QA asking "What is the moving status of object" and every behavior QA
    becomes multiple choice: 3 distractors drawn from the official universe, shuffled, appended
    to ``Q``; ``A`` becomes the letter.

    Args:
        test_frame: a frame of :func:`select_frame_qa`.
        rng: the random generator (``sample`` then ``shuffle`` per question, in file order).
        where: location used in error messages.

    Returns:
        ``test_frame`` with its MC questions converted.
    """
    for i, qa in enumerate(test_frame["QA"]["perception"]):
        if _MOVING_STATUS_Q in qa["Q"].lower():
            qa.update(_multiple_choice(qa["Q"], qa["A"], MOVING_STATUS_OPTIONS, rng,
                                       f"{where} / QA.perception[{i}] (moving status)"))
    for i, qa in enumerate(test_frame["QA"]["behavior"]):
        qa.update(_multiple_choice(qa["Q"], qa["A"], BEHAVIOR_OPTIONS, rng,
                                   f"{where} / QA.behavior[{i}]"))
    return test_frame


def frame_rng(seed: int, scene_token: str, frame_token: str) -> random.Random:
    """The per-frame generator of the MC options (independent of frame order)."""
    return random.Random(f"{seed}/{scene_token}/{frame_token}")


def build_test_frame(frame: dict, scene_token: str, frame_token: str, seed: int = 0,
                     where: str | None = None) -> tuple[dict, list[int]]:
    """Test-set version of one GT frame: selected QA with tags, MC questions converted.

    Args:
        frame: a DriveLM v1.1 key frame.
        scene_token / frame_token: its keys (they seed the MC draw).
        seed: global seed of the MC options.
        where: location for error messages (defaults to scene/frame).

    Returns:
        ``(test_frame, source_index)`` as :func:`select_frame_qa`.
    """
    where = where or f"scene {scene_token} / frame {frame_token}"
    test_frame, source_index = select_frame_qa(frame, where)
    convert_frame_mc(test_frame, frame_rng(seed, scene_token, frame_token), where)
    return test_frame, source_index


def mc_questions_for_frame(frame: dict, scene_token: str, frame_token: str,
                           seed: int = 0) -> dict[int, MCQuestion]:
    """The MC questions a model must answer for a frame, keyed by full-frame QA index.

    Use it at inference time: for QA ``i`` of the frame's full list, when ``i`` is a key, ask
    ``result[i].question`` and expect ``result[i].answer`` (a letter) instead of the free form.

    Args:
        frame: a DriveLM v1.1 key frame; scene_token / frame_token / seed: as
            :func:`build_test_frame` (the same values the metric uses).

    Returns:
        dict full QA index -> :class:`MCQuestion`.
    """
    test_frame, source_index = build_test_frame(frame, scene_token, frame_token, seed)
    out = {}
    for (_, qa), i in zip(_iter_frame_qa(test_frame), source_index):
        mc = mc_question_for(qa)
        if mc is not None:
            out[i] = mc
    return out


def build_test_eval(data: dict, seed: int = 0, source: str = "DriveLM data") -> dict:
    """``extract_data.py`` + ``convert_data.py`` on a whole DriveLM v1.1 dict.

    Args:
        data: ``{scene: {"key_frames": {frame: frame_dict}}}`` (e.g. from ``load_drivelm``).
        seed: global seed of the MC options.
        source: name of the data (file path) used in error messages.

    Returns:
        The ``test_eval.json`` dict (scene descriptions and key_object_infos dropped).
    """
    test = {}
    for scene_token, scene in data.items():
        if "key_frames" not in scene:
            raise DriveLMEvalError(f"{source}: scene {scene_token}: missing key 'key_frames'. Fix: "
                                   f"pass a DriveLM v1.1 dict {{scene: {{'key_frames': ...}}}}")
        test[scene_token] = {"key_frames": {}}
        for frame_token, frame in scene["key_frames"].items():
            test_frame, _ = build_test_frame(frame, scene_token, frame_token, seed,
                                             f"{source}: scene {scene_token} / frame {frame_token}")
            test[scene_token]["key_frames"][frame_token] = test_frame
    return test


def _iter_frame_qa(test_frame: dict) -> Iterator[tuple[int, dict]]:
    qa = test_frame["QA"]
    for i, item in enumerate(qa["perception"] + qa["prediction"] + qa["planning"] + qa["behavior"]):
        yield i, item


def iter_official_ids(test: dict, source: str = "test_eval") -> Iterator[tuple[str, dict]]:
    """Yield ``(f"{scene}_{frame}_{i}", qa)`` in the official order (``convert2llama.py`` ids).

    ``i`` indexes the frame's perception+prediction+planning+behavior test QA concatenated.

    Args:
        test: a ``test_eval.json`` dict.
        source: name used in error messages.
    """
    for scene_token, scene in test.items():
        if "key_frames" not in scene:
            raise DriveLMEvalError(f"{source}: scene {scene_token}: missing key 'key_frames'. Fix: "
                                   f"pass a test_eval.json built by build_test_eval/convert_data.py")
        for frame_token, frame in scene["key_frames"].items():
            qa = frame.get("QA")
            if not isinstance(qa, dict) or any(stage not in qa for stage in STAGES):
                raise DriveLMEvalError(f"{source}: scene {scene_token} / frame {frame_token}: 'QA' must "
                                       f"hold the lists {list(STAGES)}. Fix: rebuild the test file")
            for i, item in _iter_frame_qa(frame):
                yield f"{scene_token}_{frame_token}_{i}", item

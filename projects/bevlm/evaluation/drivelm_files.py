"""Official DriveLM challenge files: ``test_eval.json`` and ``output.json`` readers and writers.

* ``test_eval.json``: ``{scene: {"key_frames": {frame: {"QA": {stage: [QA + "tag"]},
  "image_paths": {...}}}}}`` (see :mod:`.drivelm_testset`);
* ``output.json``: ``[{"id": f"{scene}_{frame}_{i}", "question", "answer"}]``; a
  ``submission.json`` (``prepare_submission.py``) holds the same list under ``results``;
* ``per_frame.json`` (this code base, next to them): the per-frame records of the other metrics,
  one section per metric, ``{"planning": {frame: {"scene_token", ...}}, "efficiency": {...}}``
  (see :func:`update_per_frame`). With the two official files it holds everything needed to score
  any subset of frames again (:mod:`.bootstrap`).

Writers go through a temp file + rename, so nothing half-written is left behind.
"""
from __future__ import annotations

import json
import os

from bevlm.utils import atomic_write_json

from .drivelm_testset import DriveLMEvalError, iter_official_ids


def write_test_eval(test: dict, path: str) -> None:
    """Write ``test_eval.json`` (temp file + rename, never half-written)."""
    atomic_write_json(test, path)


def write_predictions(pred: dict[str, str], test: dict, path: str) -> None:
    """Write ``output.json``: ``[{"id", "question", "answer"}]`` in the official id order.

    Args:
        pred: official id -> answer; every id of ``test`` must be present.
        test: the ``test_eval.json`` dict the ids refer to (gives the questions).
        path: output path (temp file + rename).
    """
    check_prediction_ids(pred, test, source="write_predictions")
    rows = [{"id": qid, "question": qa["Q"], "answer": pred[qid]} for qid, qa in iter_official_ids(test)]
    atomic_write_json(rows, path)


def check_prediction_ids(pred: dict, test: dict, source: str = "predictions") -> None:
    """Raise :class:`DriveLMEvalError` listing the test ids that have no prediction."""
    missing = [qid for qid, _ in iter_official_ids(test) if qid not in pred]
    if missing:
        shown = ", ".join(missing[:10]) + (f", ... ({len(missing) - 10} more)" if len(missing) > 10 else "")
        raise DriveLMEvalError(
            f"{source}: {len(missing)} test question id(s) have no prediction: {shown}. Fix: answer "
            f"every question of the test file (ids are f'{{scene}}_{{frame}}_{{i}}', i over the frame's "
            f"perception+prediction+planning+behavior test QA); the official evaluation.py raises "
            f"KeyError here")


def _load_json(path: str, what: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: {what} not found. Fix: pass an existing file")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DriveLMEvalError(f"{path}: line {e.lineno}: invalid JSON ({e.msg}). Fix: regenerate "
                               f"the {what}; it is probably truncated") from e


def load_test_eval(path: str) -> dict:
    """Read and validate a ``test_eval.json`` (every QA needs ``Q``, ``A`` and ``tag``)."""
    test = _load_json(path, "test file (test_eval.json)")
    if not isinstance(test, dict):
        raise DriveLMEvalError(f"{path}: top level must be {{scene: {{'key_frames': ...}}}}. Fix: pass "
                               f"test_eval.json, not output.json")
    for qid, qa in iter_official_ids(test, source=path):
        for key in ("Q", "A", "tag"):
            if key not in qa:
                raise DriveLMEvalError(f"{path}: QA {qid}: missing key '{key}'. Fix: build the test file "
                                       f"with build_test_eval (extract_data.py adds 'tag')")
    return test


def load_predictions(path: str) -> dict[str, str]:
    """Read ``output.json`` (or a ``submission.json`` with ``results``) as ``{id: answer}``.

    Later duplicates of an id win, as in the official dict comprehension.
    """
    rows = _load_json(path, "prediction file (output.json)")
    if isinstance(rows, dict) and "results" in rows:
        rows = rows["results"]
    if not isinstance(rows, list):
        raise DriveLMEvalError(f"{path}: expected a list of {{'id', 'question', 'answer'}}. Fix: pass "
                               f"output.json (or submission.json), not the test file")
    pred = {}
    for k, row in enumerate(rows):
        if not isinstance(row, dict) or "id" not in row or "answer" not in row:
            raise DriveLMEvalError(f"{path}: item [{k}] lacks 'id' or 'answer'. Fix: every prediction "
                                   f"is {{'id': '<scene>_<frame>_<i>', 'question': ..., 'answer': ...}}")
        if not isinstance(row["answer"], str):
            raise DriveLMEvalError(f"{path}: item [{k}] (id {row['id']}): 'answer' must be a string, "
                                   f"got {type(row['answer']).__name__}. Fix: write answers as text")
        pred[row["id"]] = row["answer"]
    return pred


def splice_family(pred: dict[str, str], other: dict[str, str], test: dict, family: str,
                  only_without: str | None = None, source: str = "other predictions") -> tuple[dict[str, str], int]:
    """``pred`` with its answers to one question family taken from ``other`` (a diagnostic: how much
    of a score difference between two runs that family's answers carry, the rest left as they are).

    Args:
        pred: ``{id: answer}`` of the run to change (:func:`load_predictions`).
        other: ``{id: answer}`` of the run that gives the family's answers.
        test: the ``test_eval.json`` dict both were scored on (its questions give the families,
            :func:`bevlm.structures.qa_families.question_family`).
        family: the question family, e.g. ``'important_objects'``.
        only_without: replace only the answers of ``pred`` that do not contain this text (None: all).
        source: name of ``other`` in error messages.

    Returns:
        ``(new predictions, number of answers replaced)``.

    Raises:
        DriveLMEvalError: the test set has no question of ``family``, or ``other`` lacks one of them.
    """
    from bevlm.structures.qa_families import question_family

    ids = [qid for qid, qa in iter_official_ids(test) if question_family(qa["Q"]) == family]
    if not ids:
        raise DriveLMEvalError(f"splice_family: the test set holds no question of family {family!r}. Fix: name a "
                               f"family of bevlm.structures.qa_families.FAMILIES that the test set asks")
    missing = [qid for qid in ids if qid not in other]
    if missing:
        raise DriveLMEvalError(f"{source}: no answer for {len(missing)} {family} question(s), e.g. {missing[0]}. "
                               f"Fix: give predictions on the same test file")
    out, replaced = dict(pred), 0
    for qid in ids:
        if only_without is None or only_without not in pred.get(qid, ""):
            out[qid] = other[qid]
            replaced += 1
    return out, replaced


def family_exact_match(pred: dict[str, str], test: dict) -> dict[str, dict]:
    """Exact match (after ``.strip()``) per question family over the answered test questions, with how
    many reference answers hold a c-tag (``<cN,CAM,x,y>``: pixel coordinates to 0.1 px, which an answer
    matches exactly only by chance, so those questions bound the reachable exact match).

    Args:
        pred: ``{id: answer}`` (:func:`load_predictions`); questions without an answer are left out.
        test: the ``test_eval.json`` dict.

    Returns:
        ``{family: {"questions": n, "exact": hits, "with_ctag": n_ctag, "distinct": d}}`` plus
        ``"all"``, in the order the families first appear; ``distinct`` counts the different
        (stripped) answers given, so a family answered with one text whatever the frame shows 1.
    """
    from bevlm.structures.qa_families import CTAG_RE, question_family

    out: dict[str, dict] = {}
    seen: dict[str, set] = {}
    for qid, qa in iter_official_ids(test):
        if qid not in pred:
            continue
        for key in (question_family(qa["Q"]), "all"):
            row = out.setdefault(key, {"questions": 0, "exact": 0, "with_ctag": 0, "distinct": 0})
            row["questions"] += 1
            row["exact"] += int(pred[qid].strip() == qa["A"].strip())
            row["with_ctag"] += int(bool(CTAG_RE.search(qa["A"])))
            seen.setdefault(key, set()).add(pred[qid].strip())
    for key, row in out.items():
        row["distinct"] = len(seen[key])
    if "all" in out:
        out["all"] = out.pop("all")
    return out


#: Name of the per-frame records file in a test output folder.
PER_FRAME_FILE = "per_frame.json"


def update_per_frame(folder: str, section: str, records: dict[str, dict]) -> str:
    """Set one metric's section of ``<folder>/per_frame.json`` (other sections are kept).

    Args:
        folder: the test output folder.
        section: the metric's section name (e.g. ``"planning"``, ``"efficiency"``); replaced whole,
            so no frame of an earlier run in the same folder survives in it.
        records: frame token -> record; every record carries its ``scene_token``.

    Returns:
        The path written (temp file + rename).
    """
    for token, rec in records.items():
        if "scene_token" not in rec:
            raise DriveLMEvalError(f"per_frame.json section {section!r}: frame {token} has no 'scene_token'. "
                                   f"Fix: give every record the scene token of its frame")
    path = os.path.join(folder, PER_FRAME_FILE)
    data = {}
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError:
            data = {}  # a damaged file of an earlier run: rewritten from this run's sections
        if not isinstance(data, dict):
            data = {}
    data[section] = records
    atomic_write_json(data, path)
    return path


def load_per_frame(path: str) -> dict:
    """Read ``per_frame.json`` (``{section: {frame: record}}``)."""
    data = _load_json(path, "per-frame records (per_frame.json)")
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise DriveLMEvalError(f"{path}: expected {{section: {{frame_token: record}}}}. Fix: pass the "
                               f"per_frame.json that tools/test.py writes")
    return data


#: The submission fields of the challenge's ``prepare_submission.py`` (besides ``results``).
SUBMISSION_FIELDS = ("method", "team", "authors", "email", "institution", "country")


def strip_answers(test: dict) -> dict:
    """The questions-only form of a ``test_eval.json`` dict (the challenge's ``*_q_only.json``).

    Every QA keeps its ``Q`` and ``tag`` (and any other key but ``A``); ``image_paths`` stay.
    """
    out = {}
    for scene_token, scene in test.items():
        frames = {}
        for frame_token, frame in scene["key_frames"].items():
            qa = {stage: [{k: v for k, v in item.items() if k != "A"} for item in items]
                  for stage, items in frame["QA"].items()}
            frames[frame_token] = {**{k: v for k, v in frame.items() if k != "QA"}, "QA": qa}
        out[scene_token] = {"key_frames": frames}
    return out


def write_submission(rows: list[dict], path: str, info: dict | None = None) -> None:
    """Write the challenge's ``submission.json``: the submission fields + ``results`` = ``rows``.

    Args:
        rows: the ``output.json`` list ``[{"id", "question", "answer"}]``.
        path: output path (temp file + rename).
        info: values of :data:`SUBMISSION_FIELDS` (``authors`` a list of strings); unknown keys are
            refused, missing ones are written empty (fill them before uploading).
    """
    info = dict(info or {})
    unknown = sorted(set(info) - set(SUBMISSION_FIELDS))
    if unknown:
        raise DriveLMEvalError(f"submission info: unknown field(s) {unknown}. Fix: use {list(SUBMISSION_FIELDS)}")
    authors = info.get("authors", [])
    if isinstance(authors, str):
        authors = [a.strip() for a in authors.split(",") if a.strip()]
    if not isinstance(authors, list) or not all(isinstance(a, str) for a in authors):
        raise DriveLMEvalError(f"submission info: 'authors' must be a list of names, got {authors!r}")
    sub = {k: str(info.get(k, "")) for k in SUBMISSION_FIELDS if k != "authors"}
    sub["authors"] = authors
    sub = {k: sub[k] for k in SUBMISSION_FIELDS}
    sub["results"] = rows
    atomic_write_json(sub, path)

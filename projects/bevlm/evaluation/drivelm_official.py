"""The official DriveLM challenge score, reproduced exactly for every non-GPT term.

Port of ``challenge/evaluation.py`` (OpenDriveLab/DriveLM, docs/drivelm_spec.md section 4.1):

* ``accuracy``: mean of raw string equality ``answer == GT`` over tag-0 QA ("A" != "A.");
  (``accuracy_ungated``, not an official figure: the same over every tag-0 QA, skipped or not, so
  that two models are compared on the same questions whatever their first answers matched;
  ``gpt_free_ungated`` is ``gpt_free_final`` with it in place of ``accuracy``; the language and
  match terms keep the official kept sets);
* ``language``: BLEU-1..4, ROUGE_L, CIDEr of pycocoevalcap after the Stanford PTB tokenizer, in
  ONE corpus-level call over all kept tag-2 QA (as ``language_evaluation.CocoEvaluator``);
* ``match``: (mean c-tag point F1 x 100 + mean GPT score) / 2 over tag-3 QA;
* ``chatgpt``: mean GPT score over tag-1 QA;
* graph gating: per frame, the prediction of QA ``i == 0`` is matched to its GT; only the GT
  points it matched form the frame's graph. A later QA is scored only if every ``\\d+\\.\\d+``
  pair of its question is in the graph; otherwise it is *skipped* (left out of every mean);
* ``final = 0.4 chatgpt/100 + 0.2 L + 0.2 match/100 + 0.2 accuracy`` with
  ``L = (B1+B2+B3+B4)/12 + ROUGE_L/3 + CIDEr/30``.

Without a GPT judge, ``chatgpt`` and the GPT half of ``match`` are absent (None, never 0), the
score that can be computed is ``gpt_free_final = 0.2 L + 0.2 accuracy + 0.1 F1/100`` and
``missing_gpt_weight = 0.5`` says how much of ``final`` it cannot see. Where a tag has no kept
QA, its term is None and the count says so; the official script raises ZeroDivisionError there.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from .drivelm_files import check_prediction_ids
from .drivelm_testset import DriveLMEvalError, iter_official_ids

_NUM_RE = re.compile(r"\d+\.\d+")
_MATCH_THRESHOLD = 16.0
LANGUAGE_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr")
TAGS = (0, 1, 2, 3)
#: Weight of the GPT terms in ``final``: chatgpt 0.4 + the GPT half of match 0.1.
GPT_WEIGHT = 0.5

#: Official judge messages (``challenge/gpt_eval.py``).
JUDGE_SYSTEM = "an evaluator who rates my answer based on the correct answer"
JUDGE_PROMPT = ("Rate my answer based on the correct answer out of 100, with higher scores indicating "
                "that the answer is closer to the correct answer, and you should be accurate to single "
                "digits like 62, 78, 41,etc. Output the number only")


def _points(text: str, drop_odd: bool, what: str) -> list[tuple[float, float]]:
    """All ``\\d+\\.\\d+`` numbers of ``text`` as (x, y) pairs (integers are not parsed)."""
    nums = [float(x) for x in _NUM_RE.findall(text)]
    if len(nums) % 2:
        if not drop_odd:
            raise DriveLMEvalError(
                f"{what}: {len(nums)} decimal numbers in {text[:120]!r}..., not pairs; the official "
                f"evaluation.py fails here (numpy reshape error, README FAQ). Fix: write every c-tag "
                f"coordinate with a decimal point, e.g. <c1,CAM_FRONT,800.0,450.5>")
        nums = nums[:-1]
    return list(zip(nums[0::2], nums[1::2]))


@dataclass(frozen=True)
class MatchResult:
    """Outcome of :func:`match_result`.

    Attributes:
        matched_gt: GT points matched by a predicted point, in prediction order.
        f1: ``2PR/(P+R+1e-8)`` with ``P = TP/(TP+FP+1e-8)``, ``R = TP/(TP+FN+1e-8)``; 0..1.
        true_positives / false_positives / false_negatives: the counts.
    """

    matched_gt: tuple
    f1: float
    true_positives: int
    false_positives: int
    false_negatives: int


def match_result(answer: str, gt: str) -> MatchResult:
    """Greedy c-tag point matching of ``evaluation.py::match_result``.

    Parse ``\\d+\\.\\d+`` from both strings (an odd count in ``answer`` drops its last number),
    pair them as (x, y); for each predicted point in order take the nearest remaining GT point by
    L1 distance (first one on ties); distance ``< 16`` is a TP (that GT point is removed), else FP.

    Args:
        answer: predicted text.
        gt: ground-truth text.

    Returns:
        A :class:`MatchResult`.

    Raises:
        DriveLMEvalError: ``gt`` has an odd number of decimal numbers (official: reshape error).
    """
    pred_pts = _points(answer, drop_odd=True, what="prediction")
    gt_pts = _points(gt, drop_odd=False, what="GT answer")
    length = len(gt_pts)
    matched, tp, fp = [], 0, 0
    for px, py in pred_pts:
        best, best_id = float("inf"), None
        for i, (gx, gy) in enumerate(gt_pts):
            dist = abs(px - gx) + abs(py - gy)
            if dist < best:
                best, best_id = dist, i
        if best < _MATCH_THRESHOLD:
            tp += 1
            matched.append(gt_pts.pop(best_id))
        else:
            fp += 1
    fn = length - tp
    precision = tp / (tp + fp + 1e-8)
    recall = tp / (tp + fn + 1e-8)
    f1 = 2 * precision * recall / (precision + recall + 1e-8)
    return MatchResult(tuple(matched), f1, tp, fp, fn)


def question_in_graph(question: str, graph: set) -> bool:
    """``evaluation.py::eval_graph``: all decimal (x, y) pairs of ``question`` are in ``graph``."""
    return all(p in graph for p in _points(question, drop_odd=False, what="question"))


def language_scores(answers: list[str], gts: list[str]) -> dict[str, float]:
    """BLEU-1..4, ROUGE_L, CIDEr in one corpus-level call, as ``language_evaluation.CocoEvaluator``.

    Builds COCO captions with image ids ``0..n-1`` and one reference each (``_UNK`` ->
    ``_UNKNOWN`` in references), tokenises with the Stanford PTBTokenizer (java), then scores
    with pycocoevalcap's Bleu(4) (``option='closest'``), Rouge (LCS F, beta 1.2) and Cider
    (CIDEr-D, idf from these references). Papineni et al. 2002; Lin 2004; Vedantam et al. 2015.

    Args:
        answers: predicted strings; gts: reference strings (same length, >= 1).

    Returns:
        ``{"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"}`` -> float.
    """
    if len(answers) != len(gts) or not answers:
        raise ValueError(f"language_scores: need equally long, non-empty lists, got {len(answers)} "
                         f"answers and {len(gts)} references")
    if shutil.which("java") is None:
        raise RuntimeError("language_scores: 'java' not found on PATH; the official PTB tokenizer "
                           "(pycocoevalcap) needs it. Fix: install a JRE (e.g. apt-get install "
                           "default-jre-headless)")
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError as e:
        raise ImportError("language_scores needs pycocoevalcap. Fix: pip install pycocoevalcap==1.2") from e
    refs = {i: [{"caption": gt.replace("_UNK", "_UNKNOWN")}] for i, gt in enumerate(gts)}
    hyps = {i: [{"caption": ans}] for i, ans in enumerate(answers)}
    tokenizer = PTBTokenizer()
    with contextlib.redirect_stdout(io.StringIO()):
        refs_tok = tokenizer.tokenize(refs)
        hyps_tok = tokenizer.tokenize(hyps)
        bleu, _ = Bleu(4).compute_score(refs_tok, hyps_tok)
        rouge, _ = Rouge().compute_score(refs_tok, hyps_tok)
        cider, _ = Cider().compute_score(refs_tok, hyps_tok)
    return dict(zip(LANGUAGE_KEYS, [float(b) for b in bleu] + [float(rouge), float(cider)]))


def language_score(lang: dict[str, float]) -> float:
    """``L`` of the final score, accumulated in the official order and association."""
    score = 0.0
    for idx, key in enumerate(LANGUAGE_KEYS):
        if idx < 4:
            score += lang[key] / 4. / 3.
        elif idx == 4:
            score += lang[key] / 3.
        else:
            score += lang[key] / 10. / 3.
    return score


class OpenAIJudge:
    """GPT score of ``challenge/gpt_eval.py`` through any OpenAI-compatible chat endpoint.

    Only contacts ``base_url`` when called. Same system/user messages, ``temperature=0.6``,
    ``max_tokens=3000``; ``<think>...</think>`` blocks are removed from the reply.

    Args:
        base_url: e.g. ``"https://api.openai.com/v1"`` (``/chat/completions`` is appended).
        model: model name (official: ``"gpt-3.5-turbo"``).
        api_key_env: environment variable holding the key (read at call time).
        timeout_s: HTTP timeout per request.
    """

    def __init__(self, base_url: str, model: str = "gpt-3.5-turbo", api_key_env: str = "OPENAI_API_KEY",
                 timeout_s: float = 60.0):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s

    @staticmethod
    def messages(answer: str, gt: str) -> list[dict]:
        """The official chat messages (prompt pieces concatenated without separators)."""
        prompt = JUDGE_PROMPT + "This is the correct answer: " + gt + "This is my answer: " + answer
        return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": prompt}]

    def __call__(self, answer: str, gt: str) -> float:
        key = os.environ.get(self.api_key_env)
        if not key:
            raise RuntimeError(f"OpenAIJudge: environment variable {self.api_key_env} is not set. Fix: "
                               f"export it, or run without a judge (GPT terms are then reported absent)")
        body = json.dumps({"model": self.model, "messages": self.messages(answer, gt),
                           "temperature": 0.6, "max_tokens": 3000}).encode()
        req = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            reply = json.loads(resp.read().decode())["choices"][0]["message"]["content"]
        reply = re.sub(r"<think>[\s\S]*?</think>\s*", "", reply or "").strip()
        try:
            return float(reply)
        except ValueError as e:
            raise RuntimeError(f"OpenAIJudge: reply {reply[:80]!r} from {self.url} is not a number "
                               f"(the official script fails the same way). Fix: use a model that "
                               f"follows 'Output the number only'") from e


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def gpt_free_sum(language_score, accuracy, match_f1):
    """The official final score's non-GPT terms: ``0.2 L + 0.2 accuracy + 0.2 (F1 / 2) / 100`` (floats or
    arrays; the match term's GPT half is absent)."""
    return 0.2 * language_score + 0.2 * accuracy + 0.2 * (match_f1 / 2.0 / 100.)


def evaluate(pred: dict[str, str], test_eval: dict, gpt_judge: Callable[[str, str], float] | None = None,
             judge_workers: int = 8, source: str = "predictions") -> dict:
    """Score predictions against a ``test_eval.json`` dict exactly as ``evaluation.py``.

    Args:
        pred: official id ``f"{scene}_{frame}_{i}"`` -> answer string.
        test_eval: the test dict (QA with ``Q``, ``A``, ``tag``).
        gpt_judge: optional callable ``(answer, gt) -> score 0..100`` (e.g. :class:`OpenAIJudge`);
            None leaves the GPT terms absent.
        judge_workers: threads for judge calls.
        source: name of the predictions in error messages.

    Returns:
        dict with ``accuracy``, ``accuracy_ungated`` (tag-0 accuracy over every tag-0 QA, gating
        ignored; not part of any official score), ``language`` (sub-scores dict), ``language_score`` (L),
        ``match_f1`` (mean F1 x 100), ``match_gpt``, ``match``, ``chatgpt``, ``counts``
        (``{"tag0": {"kept", "skipped"}, ...}``), ``gpt_free_final``, ``gpt_free_ungated`` (the same
        with ``accuracy_ungated``; not official), ``missing_gpt_weight``,
        ``final`` (None without judge), ``absent`` (names of absent terms) and ``items``
        (per QA: id, tag, kept, question, gt, answer).
    """
    check_prediction_ids(pred, test_eval, source)
    counts = {f"tag{t}": {"kept": 0, "skipped": 0} for t in TAGS}
    acc, lang_ans, lang_gt, gpt_pairs, match_pairs, items = [], [], [], [], [], []
    acc_ungated: list[float] = []
    graph: set = set()
    for qid, qa in iter_official_ids(test_eval):
        if "tag" not in qa:
            raise DriveLMEvalError(f"test_eval: QA {qid}: missing key 'tag'. Fix: build the test file "
                                   f"with build_test_eval (extract_data.py adds 'tag')")
        answer, gt, tag = pred[qid], qa["A"], qa["tag"]
        if not isinstance(answer, str):
            raise DriveLMEvalError(f"{source}: id {qid}: answer must be a string, got "
                                   f"{type(answer).__name__}. Fix: pass answers as text")
        if qid.rsplit("_", 1)[1] == "0":  # i == 0: always scored; its matched GT points are the graph
            graph = set(match_result(answer, gt).matched_gt)
            kept = True
        else:
            kept = question_in_graph(qa["Q"], graph)
        for t in TAGS:
            if t in tag:
                counts[f"tag{t}"]["kept" if kept else "skipped"] += 1
        items.append({"id": qid, "tag": list(tag), "kept": kept, "question": qa["Q"], "gt": gt,
                      "answer": answer})
        if 0 in tag:
            acc_ungated.append(1.0 if answer == gt else 0.0)
        if not kept:
            continue
        if 0 in tag:
            acc.append(1.0 if answer == gt else 0.0)
        if 1 in tag:
            gpt_pairs.append((answer, gt))
        if 2 in tag:
            lang_ans.append(answer)
            lang_gt.append(gt)
        if 3 in tag:
            match_pairs.append((answer, gt))

    out = {"accuracy": _mean(acc), "accuracy_ungated": _mean(acc_ungated)}
    out["language"] = language_scores(lang_ans, lang_gt) if lang_ans else None
    out["language_score"] = language_score(out["language"]) if lang_ans else None
    out["match_f1"] = _mean([match_result(a, g).f1 * 100 for a, g in match_pairs])
    out["chatgpt"] = out["match_gpt"] = out["match"] = None
    if gpt_judge is not None:
        with ThreadPoolExecutor(max_workers=max(1, judge_workers)) as pool:
            out["chatgpt"] = _mean([float(s) for s in pool.map(lambda p: gpt_judge(*p), gpt_pairs)])
            out["match_gpt"] = _mean([float(s) for s in pool.map(lambda p: gpt_judge(*p), match_pairs)])
        if out["match_f1"] is not None and out["match_gpt"] is not None:
            out["match"] = (out["match_f1"] + out["match_gpt"]) / 2.0
    out["counts"] = counts
    needed = {"accuracy": out["accuracy"], "language": out["language_score"], "match_f1": out["match_f1"]}
    absent = [name for name, value in needed.items() if value is None]
    out["gpt_free_final"] = None if absent else gpt_free_sum(out["language_score"], out["accuracy"], out["match_f1"])
    # not an official figure: the same sum with the tag-0 accuracy over every tag-0 QA (gating ignored)
    out["gpt_free_ungated"] = None if absent or out["accuracy_ungated"] is None else gpt_free_sum(
        out["language_score"], out["accuracy_ungated"], out["match_f1"])
    if gpt_judge is None:
        out["missing_gpt_weight"] = GPT_WEIGHT
        absent += ["chatgpt", "match_gpt"]
        out["final"] = None
    else:
        out["missing_gpt_weight"] = 0.0
        absent += [name for name in ("chatgpt", "match") if out[name] is None]
        parts = [out["chatgpt"], out["language_score"], out["match"], out["accuracy"]]
        out["final"] = None if any(p is None for p in parts) else sum(
            x * y for x, y in zip([parts[0] / 100., parts[1], parts[2] / 100., parts[3]],
                                  [0.4, 0.2, 0.2, 0.2]))
    out["absent"] = absent
    out["items"] = items
    return out

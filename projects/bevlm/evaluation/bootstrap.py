"""Paired two-stage cluster bootstrap of every evaluation metric between runs on the same frames.

Two test runs scored on the same frames (same ``test_eval.json`` questions, same planning
frames) differ by a few items on a small split; whether a difference is more than the luck of
the draw of test frames is what this module answers. Frames of one scene are correlated (same
road, same agents), so the frames are resampled as a **two-stage cluster bootstrap** (Davison &
Hinkley 1997, section 3.8): the scenes are drawn with replacement, then, within each drawn scene,
its frames with replacement. Every metric of both runs is recomputed on the *same* resample and
the difference ``B - A`` is taken per resample; its 2.5 / 97.5 percentiles are the 95 % interval,
and a difference whose interval excludes zero is flagged ``significant``.

Corpus-level metrics are recomputed on each resample, never averaged per frame: the official
BLEU-1..4 (corpus n-gram counts, brevity penalty over the corpus), ROUGE-L (mean of per-answer
LCS F), CIDEr-D (document frequencies of the resample's references) of pycocoevalcap, the
accuracy, match F1, the language score L and the GPT-free score of :mod:`.drivelm_official`.
All answers and references are tokenised ONCE with the PTB tokenizer; per resample only sums of
precomputed per-answer statistics are taken (BLEU, ROUGE-L, accuracy, F1) and CIDEr's tf-idf
weights are recomputed from the resample's document frequencies with sparse matrix products, so
thousands of resamples take seconds. On the full set (every frame weight 1) the scores equal
:func:`.drivelm_official.evaluate`'s (tested).

A resample is a vector of frame weights (how often each frame was drawn); a frame drawn twice
counts twice in every sum, exactly as a test file that lists it twice would (CIDEr's document
frequencies included). Graph gating (questions skipped because the prediction of the frame's
first question missed their objects) is per frame and per run, as in the official script.

With ``by_family`` the exact match of each question family (``drivelm/exact_match/<family>``)
is resampled the same way: which kinds of question a change of ``test_exact_match`` comes from.

Planning (L2 / collision, :func:`.planning_metric.planning_summary`) and efficiency (mean
per-frame figures) come from the runs' ``per_frame.json``; they are compared when both runs have
the section.

Run folders are those of ``tools/test.py`` (``--out-dir``): ``drivelm.output.json``,
``drivelm.test_eval.json`` and ``per_frame.json`` (``output.json`` / ``test_eval.json`` are also
accepted, and a work dir whose ``test/`` holds them).
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from .drivelm_files import PER_FRAME_FILE, load_per_frame, load_predictions, load_test_eval
from .drivelm_official import LANGUAGE_KEYS, gpt_free_sum, match_result, question_in_graph
from .drivelm_testset import DriveLMEvalError, iter_official_ids
from .efficiency_metric import FRAME_PHASES
from .planning_metric import planning_summary
from ..structures.qa_families import question_family

#: DriveLM metrics recomputed on each resample (names as in ``metrics.json``).
DRIVELM_METRICS = ("drivelm/gpt_free_final", "drivelm/gpt_free_ungated", "drivelm/accuracy", "drivelm/accuracy_ungated",
                   "drivelm/language_score",
                   *(f"drivelm/{k}" for k in LANGUAGE_KEYS), "drivelm/match_f1", "drivelm/test_exact_match")
#: Planning metrics (from ``per_frame.json``).
PLANNING_METRICS = ("planning/L2_avg_stp3", "planning/L2_1s_stp3", "planning/L2_2s_stp3", "planning/L2_3s_stp3",
                    "planning/L2_3s_uniad", "planning/collision_avg_stp3")
#: Efficiency metrics (mean per frame, from ``per_frame.json``).
EFFICIENCY_METRICS = ("efficiency/frame_s", "efficiency/decode_s", "efficiency/tokens_per_frame")
#: Prefix of the per-family exact-match metrics (``PairedBootstrap(by_family=True)``), e.g.
#: ``drivelm/exact_match/safe_actions``: the share of that family's test questions answered exactly.
FAMILY_EXACT_PREFIX = "drivelm/exact_match/"
#: Metrics where lower is better (the others: higher is better).
LOWER_IS_BETTER = frozenset(PLANNING_METRICS + EFFICIENCY_METRICS)
_NGRAM = 4
_CIDER_SIGMA = 6.0
_TINY, _SMALL = 1e-15, 1e-9  # pycocoevalcap BleuScorer's guards


# ---------------------------------------------------------------------------- run files
@dataclass
class RunRecords:
    """What a test run left in its output folder.

    Attributes:
        path: the folder the files were read from.
        test: the ``test_eval.json`` dict.
        pred: official id -> answer (``output.json``).
        per_frame: ``per_frame.json`` sections (empty when the run has none).
    """

    path: str
    test: dict
    pred: dict
    per_frame: dict = field(default_factory=dict)


def _first_file(folder: str, names: tuple) -> str | None:
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def find_run_files(run_dir: str) -> tuple[str, str, str | None]:
    """``(test_eval, output, per_frame or None)`` paths of a test output folder.

    Looks in ``run_dir`` and then in ``run_dir/test`` (a work dir tested by ``tools/test.py``).

    Raises:
        FileNotFoundError: no ``test_eval.json`` / ``output.json`` pair there (the fix is named).
    """
    for folder in (run_dir, os.path.join(run_dir, "test")):
        test = _first_file(folder, ("drivelm.test_eval.json", "test_eval.json"))
        out = _first_file(folder, ("drivelm.output.json", "output.json"))
        if test and out:
            return test, out, _first_file(folder, (PER_FRAME_FILE,))
    raise FileNotFoundError(
        f"{run_dir}: no test run files (drivelm.test_eval.json + drivelm.output.json, or test_eval.json + "
        f"output.json, here or under test/). Fix: pass the --out-dir of tools/test.py (default "
        f"<work_dir>/test)")


def load_run(run_dir: str) -> RunRecords:
    """Read a test run's official files and its ``per_frame.json`` (if any)."""
    test_path, out_path, per_frame_path = find_run_files(run_dir)
    return RunRecords(path=run_dir, test=load_test_eval(test_path), pred=load_predictions(out_path),
                      per_frame=load_per_frame(per_frame_path) if per_frame_path else {})


def _question_list(test: dict) -> list[tuple]:
    return [(qid, qa["Q"], qa["A"], tuple(qa["tag"])) for qid, qa in iter_official_ids(test)]


def check_same_frames(runs: list[RunRecords]) -> None:
    """Raise :class:`DriveLMEvalError` unless every run was scored on the reference's questions and frames.

    The test questions (id, question, answer, tag) must be identical; each ``per_frame.json``
    section present in both the reference and a run must hold the same frame tokens.
    """
    ref = runs[0]
    ref_q = _question_list(ref.test)
    for run in runs[1:]:
        q = _question_list(run.test)
        if q != ref_q:
            ids_a, ids_b = {x[0]: x for x in ref_q}, {x[0]: x for x in q}
            only_a = sorted(set(ids_a) - set(ids_b))
            only_b = sorted(set(ids_b) - set(ids_a))
            changed = sorted(k for k in set(ids_a) & set(ids_b) if ids_a[k] != ids_b[k])
            order = not (only_a or only_b or changed)
            raise DriveLMEvalError(
                f"{run.path} was scored on other questions than {ref.path}: {len(only_a)} id(s) only in the "
                f"reference {only_a[:5]}, {len(only_b)} only in the run {only_b[:5]}, {len(changed)} with another "
                f"question/answer/tag {changed[:5]}" + (" (same questions, other order)" if order else "") +
                ". Fix: compare runs tested on the same split (same frame_stride, qa_select, data_root and "
                "DriveLMMetric seed)")
        for section in set(ref.per_frame) & set(run.per_frame):
            a, b = set(ref.per_frame[section]), set(run.per_frame[section])
            if a != b:
                raise DriveLMEvalError(
                    f"{run.path}: per_frame.json section {section!r} covers other frames than {ref.path} "
                    f"({len(a - b)} only in the reference, {len(b - a)} only in the run, e.g. "
                    f"{sorted(a ^ b)[:3]}). Fix: compare runs tested on the same split")


# ---------------------------------------------------------------------------- tokenisation
def ptb_tokenize(texts: list[str]) -> list[str]:
    """PTB-tokenise strings as pycocoevalcap does for the official score (one java call).

    Each string is tokenised on its own line (``-preserveLines``), so the result of a string
    does not depend on the others: one call over all answers of all runs gives what the official
    per-run calls give.
    """
    if not texts:
        return []
    if shutil.which("java") is None:
        raise RuntimeError("ptb_tokenize: 'java' not found on PATH; the official PTB tokenizer (pycocoevalcap) "
                           "needs it. Fix: install a JRE (e.g. apt-get install default-jre-headless)")
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    with contextlib.redirect_stdout(io.StringIO()):
        out = PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(texts)})
    return [out[i][0] for i in range(len(texts))]


def _ngram_counts(tokens: str) -> dict[tuple, int]:
    """pycocoevalcap's ``precook``: counts of the 1..4-grams of a whitespace-split string."""
    words = tokens.split()
    counts: dict[tuple, int] = defaultdict(int)
    for k in range(1, _NGRAM + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i:i + k])] += 1
    return counts


def _rouge_l(hyp: str, ref: str) -> float:
    from pycocoevalcap.rouge.rouge import Rouge

    return float(Rouge().calc_score([hyp], [ref]))


# ---------------------------------------------------------------------------- features
class _Frames:
    """The frame universe of a comparison: ``(scene, token)`` in first-seen order."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.scene: list[str] = []
        self.index: dict[str, int] = {}

    def add(self, scene: str, token: str) -> int:
        if token not in self.index:
            self.index[token] = len(self.keys)
            self.keys.append(token)
            self.scene.append(scene)
        return self.index[token]

    def scene_ids(self) -> np.ndarray:
        names = list(dict.fromkeys(self.scene))
        return np.array([names.index(s) for s in self.scene], dtype=int)


class _LanguageFeatures:
    """Per-answer statistics of one run's kept tag-2 QA, for BLEU / ROUGE-L / CIDEr on any weighting."""

    def __init__(self, hyps: list[str], refs: list[str], frame_of: list[int], n_frames: int,
                 vocab: list[dict]) -> None:
        from scipy import sparse

        self.n_items = len(hyps)
        self.frame_of = np.asarray(frame_of, dtype=int)
        onehot = sparse.csr_matrix((np.ones(self.n_items), (self.frame_of, np.arange(self.n_items))),
                                   shape=(n_frames, self.n_items))               # [F, I]
        self.items_per_frame = np.asarray(onehot.sum(1)).ravel()                 # [F]
        bleu = np.zeros((self.n_items, 2 + 2 * _NGRAM))  # testlen, reflen, guess[4], correct[4]
        rouge = np.zeros(self.n_items)
        rows: list[list] = [[[], [], [], []] for _ in range(_NGRAM)]  # per order: item, col, hyp tf, ref tf
        delta = np.zeros(self.n_items)
        for i, (hyp, ref) in enumerate(zip(hyps, refs)):
            hc, rc = _ngram_counts(hyp), _ngram_counts(ref)
            testlen, reflen = len(hyp.split()), len(ref.split())
            bleu[i, 0], bleu[i, 1] = testlen, reflen
            for k in range(_NGRAM):
                bleu[i, 2 + k] = max(0, testlen - k)
            for gram, c in hc.items():
                bleu[i, 2 + _NGRAM + len(gram) - 1] += min(rc.get(gram, 0), c)
            rouge[i] = _rouge_l(hyp, ref)
            # CIDEr-D "length": pycocoevalcap counts the bigram occurrences (its n == 1 branch)
            delta[i] = sum(c for g, c in hc.items() if len(g) == 2) - sum(c for g, c in rc.items() if len(g) == 2)
            for gram in set(hc) | set(rc):
                n = len(gram) - 1
                col = vocab[n].setdefault(gram, len(vocab[n]))
                r = rows[n]
                r[0].append(i), r[1].append(col), r[2].append(hc.get(gram, 0)), r[3].append(rc.get(gram, 0))
        self.bleu_frames = onehot @ bleu                                        # [F, 10]
        self.rouge_frames = onehot @ rouge                                      # [F]
        self.penalty = np.e ** (-(delta ** 2) / (2 * _CIDER_SIGMA ** 2))      # [I]
        self._rows, self._onehot = rows, onehot

    def finalise(self, vocab: list[dict]) -> None:
        """Build the sparse CIDEr matrices once every run's n-grams are in ``vocab``."""
        from scipy import sparse

        self.cider = []
        for n in range(_NGRAM):
            item, col, h, r = (np.asarray(x) for x in self._rows[n])
            shape = (self.n_items, max(1, len(vocab[n])))
            h = h.astype(float)
            r = r.astype(float)
            mk = lambda v: sparse.csr_matrix((v, (item, col)), shape=shape)  # noqa: E731
            present = mk((r > 0).astype(float))
            self.cider.append({
                "clip": mk(np.minimum(h, r) * r),       # min(tf_h, tf_r) * tf_r (idf^2 applied later)
                "hyp_sq": mk(h * h), "ref_sq": mk(r * r),
                "df_frames": (self._onehot @ present).tocsc(),  # [F, V]: reference documents per frame
            })

    def scores(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """BLEU-1..4, ROUGE-L, CIDEr of the weighted corpora (rows of ``weights [R, F]``); NaN if empty."""
        n_docs = weights @ self.items_per_frame                                # [R]
        empty = n_docs <= 0
        tot = weights @ self.bleu_frames                                       # [R, 10]
        testlen, reflen = tot[:, 0], tot[:, 1]
        out = {}
        bleu = np.ones(len(weights))
        ratio = (testlen + _TINY) / (reflen + _SMALL)
        brevity = np.where(ratio < 1, np.exp(1 - 1 / np.maximum(ratio, _TINY)), 1.0)
        for k in range(_NGRAM):
            bleu = bleu * ((tot[:, 2 + _NGRAM + k] + _TINY) / (tot[:, 2 + k] + _SMALL))
            out[f"Bleu_{k + 1}"] = np.where(ratio < 1, bleu ** (1. / (k + 1)) * brevity, bleu ** (1. / (k + 1)))
        with np.errstate(invalid="ignore", divide="ignore"):
            out["ROUGE_L"] = (weights @ self.rouge_frames) / n_docs
            out["CIDEr"] = self._cider(weights, n_docs)
        return {k: np.where(empty, np.nan, v) for k, v in out.items()}

    def _cider(self, weights: np.ndarray, n_docs: np.ndarray) -> np.ndarray:
        """CIDEr-D of pycocoevalcap with document frequencies of each weighted corpus."""
        out = np.full(len(weights), np.nan)
        if self.n_items == 0:
            return out
        item_w = weights[:, self.frame_of]                                     # [R, I]
        with np.errstate(divide="ignore"):
            ref_len = np.log(n_docs)                                           # [R]
        for start in range(0, len(weights), 256):                              # bounded memory
            sl = slice(start, start + 256)
            per_n = []
            for mats in self.cider:
                df = (mats["df_frames"].T @ weights[sl].T).T                   # [r, V]
                idf2 = (ref_len[sl, None] - np.log(np.maximum(1.0, df))) ** 2  # [r, V]
                num = mats["clip"] @ idf2.T                                    # [I, r]
                nh = np.sqrt(mats["hyp_sq"] @ idf2.T)
                nr = np.sqrt(mats["ref_sq"] @ idf2.T)
                both = (nh != 0) & (nr != 0)
                val = np.where(both, num / np.where(both, nh * nr, 1.0), num)
                per_n.append(val * self.penalty[:, None])
            item_scores = np.mean(np.stack(per_n), axis=0) * 10.0              # [I, r]
            with np.errstate(invalid="ignore", divide="ignore"):
                out[sl] = (item_w[sl] * item_scores.T).sum(1) / n_docs[sl]
        return out


class _RunFeatures:
    """Everything of one run needed to score any weighting of the frames."""

    def __init__(self, run: RunRecords, frames: _Frames, tokens: dict[str, str], vocab: list[dict],
                 by_family: bool = False) -> None:
        n = len(frames.keys)
        #: family -> [F, 2] (stripped exact matches, questions) per frame; filled only ``by_family``
        self.exact_family: dict[str, np.ndarray] = {}
        self.acc = np.zeros((n, 2))      # correct, kept tag-0
        self.acc_all = np.zeros((n, 2))  # correct, every tag-0 (graph gating ignored)
        self.f1 = np.zeros((n, 2))       # sum F1 x 100, kept tag-3
        self.exact = np.zeros((n, 2))    # stripped exact match, questions
        hyps, refs, frame_of = [], [], []
        for scene, scene_data in run.test.items():
            for token, frame in scene_data["key_frames"].items():
                f = frames.index[token]
                graph: set = set()
                for qid, qa in iter_official_ids({scene: {"key_frames": {token: frame}}}, source=run.path):
                    answer, gt, tag = run.pred[qid], qa["A"], qa["tag"]
                    if qid.rsplit("_", 1)[1] == "0":
                        graph = set(match_result(answer, gt).matched_gt)
                        kept = True
                    else:
                        kept = question_in_graph(qa["Q"], graph)
                    exact = (float(answer.strip() == gt.strip()), 1.0)
                    self.exact[f] += exact
                    if by_family:
                        self.exact_family.setdefault(question_family(qa["Q"]), np.zeros((n, 2)))[f] += exact
                    if 0 in tag:
                        self.acc_all[f] += (1.0 if answer == gt else 0.0, 1.0)
                    if not kept:
                        continue
                    if 0 in tag:
                        self.acc[f] += (1.0 if answer == gt else 0.0, 1.0)
                    if 2 in tag:
                        hyps.append(tokens["hyp:" + answer])
                        refs.append(tokens["ref:" + gt])
                        frame_of.append(f)
                    if 3 in tag:
                        self.f1[f] += (match_result(answer, gt).f1 * 100, 1.0)
        self.language = _LanguageFeatures(hyps, refs, frame_of, n, vocab)
        self.planning = self.efficiency = None
        if "planning" in run.per_frame:
            recs = run.per_frame["planning"]
            t = len(next(iter(recs.values()))["l2"]) if recs else 0
            self.planning = {k: np.zeros((n, t)) for k in ("l2", "collision", "mask")}
            for token, rec in recs.items():
                f = frames.index[token]
                self.planning["l2"][f] = rec["l2"]
                self.planning["collision"][f] = rec["collision"]
                self.planning["mask"][f] = np.asarray(rec["gt_traj_mask"], float)
            self.planning_frames = np.array([tok in recs for tok in frames.keys], float)
        if "efficiency" in run.per_frame:
            recs = run.per_frame["efficiency"]
            self.efficiency = np.zeros((n, 4))  # frame_s, decode_s, tokens, present
            for token, rec in recs.items():
                f = frames.index[token]
                frame_s = rec.get("frame_s", sum(float(rec.get(k, 0.0)) for k in FRAME_PHASES))
                self.efficiency[f] = (frame_s, rec.get("decode_s", 0.0), rec.get("tokens", 0.0), 1.0)

    def scores(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Every metric on each weighting (row of ``weights [R, F]``), NaN where undefined."""
        w = np.asarray(weights, float)

        def ratio(sums):
            tot = w @ sums
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(tot[:, 1] > 0, tot[:, 0] / tot[:, 1], np.nan)

        out = {"drivelm/accuracy": ratio(self.acc), "drivelm/accuracy_ungated": ratio(self.acc_all),
               "drivelm/match_f1": ratio(self.f1),
               "drivelm/test_exact_match": ratio(self.exact)}
        for family in sorted(self.exact_family):
            out[FAMILY_EXACT_PREFIX + family] = ratio(self.exact_family[family])
        lang = self.language.scores(w)
        for key in LANGUAGE_KEYS:
            out[f"drivelm/{key}"] = lang[key]
        score = 0.0  # the official accumulation order of drivelm_official.language_score
        for idx, key in enumerate(LANGUAGE_KEYS):
            score = score + (lang[key] / 4. / 3. if idx < 4 else lang[key] / 3. if idx == 4 else lang[key] / 10. / 3.)
        out["drivelm/language_score"] = score
        for key, acc in (("gpt_free_final", "accuracy"), ("gpt_free_ungated", "accuracy_ungated")):
            out[f"drivelm/{key}"] = gpt_free_sum(out["drivelm/language_score"], out[f"drivelm/{acc}"],
                                                 out["drivelm/match_f1"])
        if self.planning is not None:
            summary = planning_summary(self.planning["l2"], self.planning["collision"],
                                       self.planning["mask"] * self.planning_frames[:, None], w)
            for key in PLANNING_METRICS:
                out[key] = summary[key.split("/", 1)[1]]
        if self.efficiency is not None:
            tot = w @ self.efficiency
            with np.errstate(invalid="ignore", divide="ignore"):
                for col, key in enumerate(EFFICIENCY_METRICS):
                    out[key] = np.where(tot[:, 3] > 0, tot[:, col] / tot[:, 3], np.nan)
        return out


# ---------------------------------------------------------------------------- resampling
def cluster_resample(frame_scene: np.ndarray, resamples: int, seed: int = 0) -> np.ndarray:
    """Frame weights of a two-stage cluster bootstrap.

    Stage 1 draws as many scenes as there are, with replacement; stage 2 draws, for each drawn
    scene, as many of its frames as it has, with replacement. A frame's weight is how often it
    was drawn, so each drawn scene adds exactly its frame count to the total weight.

    Args:
        frame_scene: ``[F]`` scene id (0..S-1) of each frame.
        resamples: R.
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        ``[R, F]`` integer weights.
    """
    frame_scene = np.asarray(frame_scene, dtype=int)
    scenes = np.unique(frame_scene)
    members = [np.flatnonzero(frame_scene == s) for s in scenes]
    rng = np.random.default_rng(seed)
    weights = np.zeros((resamples, len(frame_scene)), dtype=np.int64)
    for r in range(resamples):
        for s in rng.integers(0, len(scenes), len(scenes)):
            frames = members[s]
            np.add.at(weights[r], frames[rng.integers(0, len(frames), len(frames))], 1)
    return weights


# ---------------------------------------------------------------------------- comparisons
class PairedBootstrap:
    """Scores of several runs on the same frames, on the full set and on shared resamples.

    Building it checks that the runs were scored on the same questions and frames and tokenises
    every answer and reference of all runs in one PTB tokenizer call.

    Args:
        runs: the runs (the first is the reference of :meth:`compare`); :class:`RunRecords` or
            run folders.
        by_family: also score the exact match of each question family
            (:func:`~bevlm.structures.qa_families.question_family`, e.g. ``safe_actions``) as
            ``drivelm/exact_match/<family>``: where a change of ``test_exact_match`` comes from.
    """

    def __init__(self, runs: list, by_family: bool = False) -> None:
        self.runs = [r if isinstance(r, RunRecords) else load_run(r) for r in runs]
        if not self.runs:
            raise ValueError("PairedBootstrap: no runs given")
        check_same_frames(self.runs)
        self.frames = _Frames()
        for scene, scene_data in self.runs[0].test.items():
            for token in scene_data["key_frames"]:
                self.frames.add(scene, token)
        for run in self.runs:
            for section in ("planning", "efficiency"):
                for token, rec in run.per_frame.get(section, {}).items():
                    self.frames.add(rec["scene_token"], token)
        texts = {}
        for run in self.runs:
            for qid, qa in iter_official_ids(run.test):
                if 2 in qa["tag"]:
                    texts["hyp:" + run.pred[qid]] = run.pred[qid]
                    texts["ref:" + qa["A"]] = qa["A"].replace("_UNK", "_UNKNOWN")  # as CocoEvaluator
        keys = list(texts)
        self.tokens = dict(zip(keys, ptb_tokenize([texts[k] for k in keys])))
        vocab: list[dict] = [{} for _ in range(_NGRAM)]
        self.features = [_RunFeatures(run, self.frames, self.tokens, vocab, by_family) for run in self.runs]
        for feat in self.features:
            feat.language.finalise(vocab)
        self.frame_scene = self.frames.scene_ids()

    @property
    def n_frames(self) -> int:
        return len(self.frames.keys)

    @property
    def n_scenes(self) -> int:
        return len(set(self.frames.scene))

    def full_scores(self, run: int) -> dict[str, float | None]:
        """Every metric of run ``run`` on the full set of frames (None where undefined)."""
        scores = self.features[run].scores(np.ones((1, self.n_frames)))
        return {k: (None if np.isnan(v[0]) else float(v[0])) for k, v in scores.items()}

    def compare(self, a: int = 0, b: int = 1, resamples: int = 1000, seed: int = 0,
                alpha: float = 0.05) -> dict:
        """Paired bootstrap of run ``b`` against run ``a``; see :func:`paired_bootstrap`."""
        return self.compare_pooled([(a, b)], resamples=resamples, seed=seed, alpha=alpha)

    def compare_pooled(self, pairs: list[tuple[int, int]], resamples: int = 1000, seed: int = 0,
                       alpha: float = 0.05) -> dict:
        """Mean over ``pairs`` of ``B - A`` (e.g. one pair per training seed) with its bootstrap interval.

        Every resample of frames is applied to every pair, and the resample's statistic is the
        mean of the pairs' differences: the interval is that of the seed-averaged difference,
        with the test frames resampled (the seed-to-seed spread itself is not resampled).

        Returns:
            ``{"metrics": {name: {"a", "b", "diff", "lo", "hi", "significant", "valid"}}, "frames",
            "scenes", "questions", "resamples", "seed", "alpha", "pairs"}``; ``a`` / ``b`` are the
            full-set scores averaged over the pairs, ``valid`` the resamples where the metric is
            defined for every pair; ``lo`` / ``hi`` are None when fewer than 2 resamples are valid.
        """
        if resamples < 1:
            raise ValueError(f"resamples must be >= 1, got {resamples}")
        weights = cluster_resample(self.frame_scene, resamples, seed)
        full = np.ones((1, self.n_frames))
        cache: dict[int, tuple] = {}
        for i in {i for pair in pairs for i in pair}:
            cache[i] = (self.features[i].scores(full), self.features[i].scores(weights))
        names = [k for k in cache[pairs[0][0]][0] if all(k in cache[i][0] for i in cache)]
        metrics = {}
        for name in names:
            a = np.mean([cache[i][0][name][0] for i, _ in pairs])
            b = np.mean([cache[j][0][name][0] for _, j in pairs])
            diffs = np.mean([cache[j][1][name] - cache[i][1][name] for i, j in pairs], axis=0)  # [R]
            ok = np.isfinite(diffs)
            lo = hi = None
            if ok.sum() >= 2:
                lo, hi = (float(x) for x in np.percentile(diffs[ok], [100 * alpha / 2, 100 * (1 - alpha / 2)]))
            num = lambda x: None if not np.isfinite(x) else float(x)  # noqa: E731
            metrics[name] = {"a": num(a), "b": num(b), "diff": num(b - a), "lo": lo, "hi": hi,
                             "significant": bool(lo is not None and (lo > 0 or hi < 0)), "valid": int(ok.sum())}
        questions = sum(1 for _ in iter_official_ids(self.runs[0].test))
        return {"metrics": metrics, "frames": self.n_frames, "scenes": self.n_scenes, "questions": questions,
                "resamples": resamples, "seed": seed, "alpha": alpha, "pairs": [list(p) for p in pairs]}


    def compare_ratios(self, a: int, b: int, names: list[str], resamples: int = 1000, seed: int = 0,
                       alpha: float = 0.05) -> dict:
        """Ratio ``B / A`` of each metric in ``names`` with its paired bootstrap interval.

        The same two-stage cluster resamples as :meth:`compare`; per resample both runs' metric is
        recomputed and their ratio taken (a speedup is ``frame_s`` of A over B: invert it). Metrics
        a run lacks are left out.

        Returns:
            ``{name: {"a", "b", "ratio", "lo", "hi", "valid"}}`` (``lo`` / ``hi`` None when fewer
            than 2 resamples give a finite ratio).
        """
        weights = cluster_resample(self.frame_scene, resamples, seed)
        full = np.ones((1, self.n_frames))
        fa, fb = self.features[a], self.features[b]
        sa, sb, ra, rb = fa.scores(full), fb.scores(full), fa.scores(weights), fb.scores(weights)
        out = {}
        for name in names:
            if name not in sa or name not in sb:
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                ratios = rb[name] / ra[name]
                full_ratio = float(sb[name][0] / sa[name][0]) if sa[name][0] else float("nan")
            ok = np.isfinite(ratios)
            lo = hi = None
            if ok.sum() >= 2:
                lo, hi = (float(x) for x in np.percentile(ratios[ok], [100 * alpha / 2, 100 * (1 - alpha / 2)]))
            out[name] = {"a": float(sa[name][0]), "b": float(sb[name][0]), "ratio": full_ratio, "lo": lo, "hi": hi,
                         "valid": int(ok.sum())}
        return out


def paired_bootstrap(run_a, run_b, resamples: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Paired two-stage cluster bootstrap of every metric, run B against run A.

    Args:
        run_a, run_b: run folders (``tools/test.py --out-dir``) or :class:`RunRecords`.
        resamples: number of resamples (1000 take a few seconds on a CPU).
        seed: resampling seed (the result is a function of the runs and the seed).
        alpha: 1 - confidence of the percentile interval (0.05: 95 %).

    Returns:
        See :meth:`PairedBootstrap.compare_pooled`: per metric ``a``, ``b``, ``diff = b - a``, its
        ``lo`` / ``hi`` percentile interval and ``significant`` (the interval excludes zero).

    Raises:
        DriveLMEvalError: the runs were scored on different questions or frames.
    """
    return PairedBootstrap([run_a, run_b]).compare(0, 1, resamples=resamples, seed=seed, alpha=alpha)


def format_number(value, signed: bool = False) -> str:
    if value is None:
        return "-"
    text = f"{value:+.4g}" if signed else f"{value:.4g}"
    return text


def format_comparison(result: dict, ref_name: str, run_name: str, metrics: list[str] | None = None) -> list[str]:
    """Markdown table of one :meth:`PairedBootstrap.compare` result.

    Columns: metric, reference, run, difference (run - reference), its interval; a difference
    whose interval excludes zero is marked ``*`` and its direction named (better / worse, by
    :data:`LOWER_IS_BETTER`).
    """
    level = round(100 * (1 - result["alpha"]))
    lines = [f"{run_name} vs {ref_name} ({result['frames']} frames in {result['scenes']} scenes, "
             f"{result['questions']} questions; {result['resamples']} paired two-stage cluster bootstrap "
             f"resamples, seed {result['seed']})", "",
             f"| metric | {ref_name} | {run_name} | difference | {level} % CI | |", "|---|---|---|---|---|---|"]
    fmt = format_number
    for name in metrics or list(result["metrics"]):
        m = result["metrics"].get(name)
        if m is None:
            continue
        mark = ""
        if m["significant"]:
            better = (m["diff"] < 0) if name in LOWER_IS_BETTER else (m["diff"] > 0)
            mark = "* better" if better else "* worse"
        ci = "-" if m["lo"] is None else f"[{fmt(m['lo'], True)}, {fmt(m['hi'], True)}]"
        lines.append(f"| {name} | {fmt(m['a'])} | {fmt(m['b'])} | {fmt(m['diff'], True)} | {ci} | {mark} |")
    return lines

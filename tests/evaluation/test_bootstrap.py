"""Paired cluster bootstrap: exact full-set scores, hand-computed differences, the resampler."""
import copy
import random
import time

import numpy as np
import pytest

from bevlm.evaluation import DriveLMEvalError, build_test_eval, evaluate, iter_official_ids
from bevlm.evaluation.bootstrap import PairedBootstrap, RunRecords, cluster_resample, paired_bootstrap

WORDS = "the ego car is moving ahead left right stop go pedestrian lane".split()


@pytest.fixture(scope="module")
def test3(sample):
    """The real sample's 9 frames regrouped into 3 scenes of 3 frames (ids follow the new scenes)."""
    test = build_test_eval(sample, seed=0)
    frames = [(tok, fr) for scene in test.values() for tok, fr in scene["key_frames"].items()]
    assert len(frames) == 9
    return {f"scene{k}": {"key_frames": dict(frames[3 * k:3 * k + 3])} for k in range(3)}


@pytest.fixture(scope="module")
def answers_a(test3):
    """A run that answers 40 % right, 40 % with random words and 20 % with half the answer."""
    rng = random.Random(0)
    pred = {}
    for qid, qa in iter_official_ids(test3):
        r = rng.random()
        if r < 0.4:
            pred[qid] = qa["A"]
        elif r < 0.8:
            pred[qid] = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))
        else:
            pred[qid] = qa["A"][: len(qa["A"]) // 2]
    return pred


def test_full_set_equals_the_official_metric(test3, answers_a):
    report = evaluate(answers_a, test3)
    full = PairedBootstrap([RunRecords("a", test3, answers_a)]).full_scores(0)
    for key in ("accuracy", "accuracy_ungated", "match_f1", "language_score", "gpt_free_final", "gpt_free_ungated"):
        assert full[f"drivelm/{key}"] == pytest.approx(report[key], rel=1e-12, abs=1e-15), key
    for key, value in report["language"].items():
        assert full[f"drivelm/{key}"] == pytest.approx(value, rel=1e-12, abs=1e-15), key
    assert report["language"]["CIDEr"] > 0 and 0 < report["accuracy"] < 1  # non-trivial case
    assert any(not it["kept"] and 0 in it["tag"] for it in report["items"])  # gating bites here
    # the gating-free sum: the official formula with the tag-0 accuracy over every tag-0 question
    assert report["gpt_free_ungated"] == pytest.approx(0.2 * report["language_score"] + 0.2 * report["accuracy_ungated"]
                                                       + 0.1 * report["match_f1"] / 100., rel=1e-12)
    assert report["accuracy_ungated"] != report["accuracy"]
    exact = [answers_a[qid].strip() == qa["A"].strip() for qid, qa in iter_official_ids(test3)]
    assert full["drivelm/test_exact_match"] == pytest.approx(sum(exact) / len(exact))


def test_resampled_corpus_scores_equal_the_official_metric_on_that_corpus(test3, answers_a):
    """A resample (frames drawn with multiplicity) scores as a test file listing those frames."""
    pb = PairedBootstrap([RunRecords("a", test3, answers_a)])
    weights = np.zeros((1, pb.n_frames))
    weights[0, [0, 1, 4, 5]] = [2, 1, 1, 1]  # frame 0 twice, frame 2 and 3 never
    tokens = pb.frames.keys
    sub, pred = {}, {}
    for copy_no, f in enumerate([0, 0, 1, 4, 5]):
        scene, token = pb.frames.scene[f], tokens[f]
        new_token = f"{token}x{copy_no}"
        frame = test3[scene]["key_frames"][token]
        sub.setdefault(scene, {"key_frames": {}})["key_frames"][new_token] = frame
        for qid, _ in iter_official_ids({scene: {"key_frames": {token: frame}}}):
            pred[f"{scene}_{new_token}_{qid.rsplit('_', 1)[1]}"] = answers_a[qid]
    report = evaluate(pred, sub)
    scores = pb.features[0].scores(weights)
    for key, value in report["language"].items():
        assert scores[f"drivelm/{key}"][0] == pytest.approx(value, rel=1e-12), key
    assert scores["drivelm/gpt_free_final"][0] == pytest.approx(report["gpt_free_final"], rel=1e-12)


def test_fixing_k_answers_gives_the_hand_computed_difference(test3, answers_a):
    report = evaluate(answers_a, test3)
    kept_tag0 = [it for it in report["items"] if it["kept"] and 0 in it["tag"]]
    wrong = [it for it in kept_tag0 if it["answer"] != it["gt"] and not it["id"].endswith("_0")]
    k = 3
    assert len(wrong) >= k
    answers_b = dict(answers_a)
    for it in wrong[:k]:
        answers_b[it["id"]] = it["gt"]
    res = paired_bootstrap(RunRecords("a", test3, answers_a), RunRecords("b", test3, answers_b),
                           resamples=300, seed=1)["metrics"]
    n_questions = len(report["items"])
    assert res["drivelm/accuracy"]["diff"] == pytest.approx(k / len(kept_tag0))
    assert res["drivelm/gpt_free_final"]["diff"] == pytest.approx(0.2 * k / len(kept_tag0))
    assert res["drivelm/test_exact_match"]["diff"] == pytest.approx(k / n_questions)
    for key in ("drivelm/language_score", "drivelm/CIDEr", "drivelm/match_f1"):
        assert res[key]["diff"] == 0.0 and res[key]["lo"] == res[key]["hi"] == 0.0
    # B is never worse than A on any resample (it only fixes answers): the interval is >= 0
    assert res["drivelm/accuracy"]["lo"] >= 0.0 and res["drivelm/accuracy"]["hi"] > 0.0


def test_identical_runs_give_a_zero_width_interval(test3, answers_a):
    res = paired_bootstrap(RunRecords("a", test3, answers_a), RunRecords("b", test3, dict(answers_a)),
                           resamples=200, seed=0)
    assert res["frames"] == 9 and res["scenes"] == 3 and res["resamples"] == 200
    for name, m in res["metrics"].items():
        assert m["diff"] == 0.0 and m["lo"] == 0.0 and m["hi"] == 0.0, name
        assert not m["significant"]


def test_result_is_reproducible_for_a_seed(test3, answers_a):
    answers_b = {qid: (a if i % 3 else qa["A"]) for i, ((qid, qa), a)
                 in enumerate(zip(iter_official_ids(test3), answers_a.values()))}
    runs = [RunRecords("a", test3, answers_a), RunRecords("b", test3, answers_b)]
    first = paired_bootstrap(*runs, resamples=300, seed=7)
    assert first == paired_bootstrap(*runs, resamples=300, seed=7)
    other = paired_bootstrap(*runs, resamples=300, seed=8)
    assert first["metrics"]["drivelm/gpt_free_final"]["diff"] == other["metrics"]["drivelm/gpt_free_final"]["diff"]
    assert any(first["metrics"][k]["lo"] != other["metrics"][k]["lo"] for k in first["metrics"])


def test_resampler_draws_whole_scenes_then_frames_within_them():
    scene = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])  # scenes of 3, 2 and 5 frames
    sizes = np.bincount(scene)
    w = cluster_resample(scene, 500, seed=3)
    assert w.shape == (500, 10) and w.dtype.kind == "i" and (w >= 0).all()
    per_scene = np.stack([w[:, scene == s].sum(1) for s in range(3)], 1)  # [R, S]
    draws = per_scene / sizes  # each drawn scene brings exactly its frame count
    assert np.allclose(draws, np.round(draws)) and (np.round(draws).sum(1) == 3).all()
    assert (np.round(draws) == 0).any()  # some resamples leave a scene out
    assert np.array_equal(w, cluster_resample(scene, 500, seed=3))
    # within a drawn scene the frames vary (stage 2), not only whole copies of the scene
    assert any(len(set(row[scene == 2])) > 1 for row in w)


def test_runs_on_other_questions_are_refused(test3, answers_a):
    other = copy.deepcopy(test3)
    frame = next(iter(other["scene1"]["key_frames"].values()))
    frame["QA"]["perception"][0]["A"] = "changed"
    with pytest.raises(DriveLMEvalError, match=r"other questions.*scene1_.*Fix"):
        PairedBootstrap([RunRecords("ref", test3, answers_a), RunRecords("run", other, answers_a)])
    fewer = {"scene0": test3["scene0"], "scene1": test3["scene1"]}
    with pytest.raises(DriveLMEvalError, match="only in the reference"):
        PairedBootstrap([RunRecords("ref", test3, answers_a), RunRecords("run", fewer, answers_a)])


def test_thousands_of_resamples_take_seconds(test3, answers_a):
    answers_b = {qid: qa["A"] for qid, qa in iter_official_ids(test3)}
    pb = PairedBootstrap([RunRecords("a", test3, answers_a), RunRecords("b", test3, answers_b)])
    t0 = time.perf_counter()
    res = pb.compare(resamples=2000, seed=0)
    assert time.perf_counter() - t0 < 20.0
    m = res["metrics"]["drivelm/gpt_free_final"]
    assert m["lo"] <= m["diff"] <= m["hi"] and m["diff"] > 0


def test_family_exact_match_gives_hand_computed_rows(test3, answers_a):
    """``by_family``: one row per question family, each the family's share answered exactly; fixing
    k wrong answers of one family moves that row by k / n_family and no other family's row."""
    from bevlm.evaluation.bootstrap import FAMILY_EXACT_PREFIX
    from bevlm.structures.qa_families import question_family

    items = [(qid, question_family(qa["Q"]), qa["A"]) for qid, qa in iter_official_ids(test3)]
    per_family: dict = {}
    for qid, fam, gt in items:
        per_family.setdefault(fam, []).append(answers_a[qid].strip() == gt.strip())
    assert len(per_family) >= 4 and "other" not in per_family  # the test set's templates are all known
    full = PairedBootstrap([RunRecords("a", test3, answers_a)], by_family=True).full_scores(0)
    for fam, hits in per_family.items():
        assert full[FAMILY_EXACT_PREFIX + fam] == pytest.approx(sum(hits) / len(hits)), fam
    # the families' rows weighted by their question counts give the overall exact match
    total = sum(full[FAMILY_EXACT_PREFIX + f] * len(h) for f, h in per_family.items()) / len(items)
    assert total == pytest.approx(full["drivelm/test_exact_match"])
    # off by default: the default tables keep their rows
    assert not any(k.startswith(FAMILY_EXACT_PREFIX) for k in PairedBootstrap([RunRecords("a", test3, answers_a)]).full_scores(0))

    fam = next(f for f, hits in per_family.items() if sum(not h for h in hits) >= 2)
    wrong = [qid for qid, f, gt in items if f == fam and answers_a[qid].strip() != gt.strip()][:2]
    answers_b = dict(answers_a)
    for qid, f, gt in items:
        if qid in wrong:
            answers_b[qid] = gt
    res = PairedBootstrap([RunRecords("a", test3, answers_a), RunRecords("b", test3, answers_b)],
                          by_family=True).compare(0, 1, resamples=300, seed=0)["metrics"]
    assert res[FAMILY_EXACT_PREFIX + fam]["diff"] == pytest.approx(2 / len(per_family[fam]))
    assert res[FAMILY_EXACT_PREFIX + fam]["lo"] >= 0.0
    for other in per_family:
        if other != fam:
            assert res[FAMILY_EXACT_PREFIX + other]["diff"] == 0.0, other

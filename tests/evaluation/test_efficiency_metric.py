"""EfficiencyMetric's FLOPs accounting of the shared prompt text, against hand-computed values."""
import pytest

from bevlm.evaluation.efficiency_metric import EfficiencyMetric, shared_prompt_accounting


def _frame(prefill, shared=None, spent=0, counted=True):
    rec = {"encoder_s": 1.0, "prefill_s": 0.5, "decode_s": 2.0, "traj_s": 0.0, "tokens": 10, "questions": 2,
           "rounds": 2, "prefix_tokens": 20, "shared_prompt_spent": spent}
    if counted:
        rec.update(encoder=4e9, prefill=prefill, shared_prompt=shared or 0)
    return rec


def test_shared_prompt_amortised_over_every_frame():
    # 4 frames, 2 with counted FLOPs; the cache (3 GFLOPs) was built once, on the first frame
    results = [_frame(1e9, 3e9, spent=3e9), _frame(1e9, 3e9), _frame(0, counted=False), _frame(0, counted=False)]
    out = shared_prompt_accounting(results, results[:2], prefill_gflops=1.0)
    assert out == pytest.approx({"shared_prompt_gflops": 3.0, "prefill_gflops_unshared": 4.0,
                                 "prefill_gflops_amortised": 1.0 + 3.0 / 4})
    # two adapters -> two builds: both are spread over the frames
    results[2]["shared_prompt_spent"] = 3e9
    assert shared_prompt_accounting(results, results[:2], 1.0)["prefill_gflops_amortised"] == pytest.approx(2.5)


def test_cache_built_before_the_first_frame_still_counts_once():
    results = [_frame(1e9, 3e9), _frame(1e9, 3e9)]  # nothing spent while answering: built at warm-up
    assert shared_prompt_accounting(results, results, 1.0)["prefill_gflops_amortised"] == pytest.approx(2.5)


def test_without_sharing_the_three_prefill_figures_agree():
    metric = EfficiencyMetric()
    out = metric.compute_metrics([_frame(2e9), _frame(4e9)])
    assert out["prefill_gflops"] == out["prefill_gflops_unshared"] == out["prefill_gflops_amortised"] == 3.0
    assert out["shared_prompt_gflops"] == 0 and out["encoder_gflops"] == 4.0

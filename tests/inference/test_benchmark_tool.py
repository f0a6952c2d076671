"""tools/benchmark.py machinery on the tiny config: variants run side by side; lossless ones agree."""
import json
import os

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from bevlm.engine.benchmark import load_model, run_benchmark
from bevlm.inference.speculative.replay import check_trace
from bevlm.inference.variants import build_variant, variant_inputs
from bevlm.registry import MODELS
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_variants_side_by_side(tiny_world, tmp_path):
    init_default_scope("bevlm")
    cfg = Config.fromfile(os.path.join(REPO, "configs", "bev_vlm_tiny.py"))
    for key, split in (("train_dataloader", "train"), ("test_dataloader", "val")):
        cfg[key]["dataset"]["ann_file"] = f"{tiny_world}/infos/bevlm_infos_{split}.pkl"
        cfg[key]["dataset"]["data_root"] = f"{tiny_world}/"
    cfg.model.projector.update(out_h=4, out_w=4)  # 16 visual tokens: enough for pruning to pay off
    torch.manual_seed(0)
    ckpt = str(tmp_path / "m.pth")
    torch.save({"state_dict": MODELS.build(cfg.model).state_dict()}, ckpt)
    variants = {
        "baseline": dict(batch_questions=False),
        "batched": dict(),
        "speculative": dict(batch_questions=False,
                            speculative=dict(skip_layers=[1], draft_len=3, use_ngram=True)),
        "speculative_store": dict(batch_questions=False,
                                  speculative=dict(use_layer_skip=False, store_draft_len=6,
                                                   datastore=dict(max_ngram=3, min_ngram=1, min_share=0.0))),
        "speculative_batched": dict(speculative=dict(use_layer_skip=False, store_draft_len=4, chain_drafts=True,
                                                     max_draft_len=8, batched=True,
                                                     datastore=dict(max_ngram=3, min_ngram=1, min_share=0.0))),
        "speculative_qdraft": dict(batch_questions=False,  # lookup + datastore, then an int4 copy drafts
                                   speculative=dict(use_layer_skip=False, draft_len=3, ngram_min_n=2,
                                                    datastore=dict(max_ngram=3, min_ngram=2, min_share=0.5),
                                                    quant_draft="int4")),
        "prompt_cache": dict(share_prompt_cache=True),
        "int4_rtn": dict(quant=dict(method="rtn", bits=4, group_size=32)),
        "int4_rtn_all": dict(quant=dict(method="rtn", bits=4, group_size=32, embeddings=True)),
        "fastv50": dict(pruning=dict(fastv_keep_ratio=0.25, fastv_layer=1)),
        "three_rounds": dict(qa_policy=dict(mode="three_rounds")),
    }
    # a budget below the important-objects references: each variant's is named before the frames run
    cfg.model.test_cfg.family_max_new_tokens = dict(important_objects=4)
    logs = []
    summary = run_benchmark(cfg, ckpt, variants, str(tmp_path / "bench"), max_frames=2, log=logs.append)
    budget_lines = [m for m in logs if "answer budget" in m]
    named = [m.split(":")[0] for m in budget_lines if "family_max_new_tokens.important_objects=" in m]
    assert sorted(named) == sorted(variants)
    assert logs.index(budget_lines[-1]) < min(i for i, m in enumerate(logs) if m.startswith("  frame "))
    rows = summary["rows"]
    assert set(rows) == set(variants)
    # lossless variants: identical answers, hence identical scores
    for name in ("batched", "speculative", "speculative_store", "speculative_batched", "speculative_qdraft",
                 "prompt_cache"):
        assert rows[name]["gpt_free"] == rows["baseline"]["gpt_free"]
        assert rows[name]["accuracy"] == rows["baseline"]["accuracy"]
        assert rows[name]["full_acc"] == rows["baseline"]["full_acc"]
        # the shared prompt cache computes the same prefix states in a different order: float rounding
        assert rows[name]["agreement"] == 1.0 and rows[name]["traj_dev_m"] <= (1e-5 if name == "prompt_cache" else 0.0)
    qdraft = rows["speculative_qdraft"]  # acceptance per draft source; the int4 copy's own bytes
    assert 0 <= qdraft["acc_quant"] <= 1 and qdraft["drafted_quant"] > 0 and qdraft["draft_MB"] > 0
    assert rows["speculative_store"]["draft_MB"] == 0
    assert rows["int4_rtn"]["llm_bytes_vs_fp16"] < rows["baseline"]["llm_bytes_vs_fp16"]
    assert rows["int4_rtn_all"]["llm_bytes_vs_fp16"] < rows["int4_rtn"]["llm_bytes_vs_fp16"]
    assert rows["prompt_cache"]["prefill_flops_ratio"] < 1.0
    # the shared prompt text: excluded < amortised over the 2 frames < counted on every frame (~ baseline)
    pc = rows["prompt_cache"]
    assert pc["flops_ratio"] < pc["flops_ratio_amortised"] < pc["flops_ratio_unshared"] <= 1.0
    assert pc["flops_ratio_unshared"] == pytest.approx(1.0, abs=0.01)  # attention over the text is counted apart
    for name in ("baseline", "batched", "int4_rtn"):  # nothing shared: the three ratios agree
        assert rows[name]["flops_ratio"] == rows[name]["flops_ratio_amortised"] == rows[name]["flops_ratio_unshared"]
    assert all(0 < r["roofline_share"] < float("inf") for r in rows.values())
    # the tiny world's val split is one scene: no cluster bootstrap intervals (tested on 3 scenes in
    # tests/evaluation/test_bootstrap_records.py), but every variant's run folder is written
    assert "intervals" not in summary and "speedup_lo" not in rows["baseline"]
    assert os.path.isfile(tmp_path / "bench" / "runs" / "int4_rtn" / "drivelm.output.json")
    assert rows["fastv50"]["prefill_flops_ratio"] < 1.0  # (the tiny encoder dominates total FLOPs)
    assert rows["three_rounds"]["rounds"] <= 3
    assert os.path.isfile(tmp_path / "bench" / "benchmark.md")
    # the batched speculative variant's draft trace (tools/draft_replay.py): one record per frame, and the
    # variant rebuilt from the config (as the tool does) replays it step for step
    runs = tmp_path / "bench" / "runs"
    assert not os.path.exists(runs / "baseline" / "draft_trace.json")
    with open(runs / "speculative_batched" / "draft_trace.json") as f:
        trace = json.load(f)
    assert len(trace) == 2 and all(r["steps"] for r in trace)
    base = load_model(cfg, ckpt)
    spec = variants["speculative_batched"]
    calib, train_qa = variant_inputs(base, cfg, [spec])
    decoder = build_variant(base, spec, calib, log=lambda *_: None, train_qa=train_qa).frame_decoder
    assert check_trace(trace, decoder) == []


def test_memory_probe_runs_each_variant_in_its_own_process(tiny_world, tmp_path):
    """``memory_frames``: each variant is built and run alone in a fresh process; the table gets its
    peak and steady RSS, and the probe's resident-weights figure matches the in-process one."""
    init_default_scope("bevlm")
    cfg = Config.fromfile(os.path.join(REPO, "configs", "bev_vlm_tiny.py"))
    for key, split in (("train_dataloader", "train"), ("test_dataloader", "val")):
        cfg[key]["dataset"]["ann_file"] = f"{tiny_world}/infos/bevlm_infos_{split}.pkl"
        cfg[key]["dataset"]["data_root"] = f"{tiny_world}/"
    cfg_path = str(tmp_path / "tiny.py")
    cfg.dump(cfg_path)
    torch.manual_seed(0)
    ckpt = str(tmp_path / "m.pth")
    torch.save({"state_dict": MODELS.build(cfg.model).state_dict()}, ckpt)
    variants = {"baseline": dict(batch_questions=False),
                "int4_cached": dict(quant=dict(method="rtn", bits=4, group_size=32, kernel="cached")),
                "int4_dequant": dict(quant=dict(method="rtn", bits=4, group_size=32, kernel="dequant"))}
    summary = run_benchmark(cfg, ckpt, variants, str(tmp_path / "bench"), max_frames=1, log=lambda *_: None,
                            memory_frames=1, config_path=cfg_path)
    import json
    with open(tmp_path / "bench" / "benchmark.json") as f:
        results = json.load(f)["results"]
    for name, row in summary["rows"].items():
        mem = results[name]["memory"]
        assert mem["frames"] == 1 and mem["variant"] == name
        assert 0 < mem["steady_rss_mb"] <= mem["peak_rss_mb"]
        assert row["peak_rss_MB"] > 0 and row["steady_rss_MB"] > 0
        # the probe process built the same variant: same resident weight bytes as in the side-by-side run
        assert mem["llm_resident_bytes"] == results[name]["llm_resident_bytes"]
    assert summary["rows"]["baseline"]["peak_rss_ratio"] == 1.0
    # the cached kernel streams (and holds) the fp32 copies; the dequant kernel only the packed codes
    cached, dequant = results["int4_cached"], results["int4_dequant"]
    assert cached["llm_read_bytes"] > results["baseline"]["llm_read_bytes"] * 0.9
    assert dequant["llm_read_bytes"] == dequant["llm_weight_bytes"] < 0.5 * results["baseline"]["llm_weight_bytes"]


def test_memory_probe_failure_names_the_variant(tmp_path):
    from bevlm.engine.benchmark import measure_variant_memory

    with pytest.raises(RuntimeError, match="memory probe of variant 'x' failed"):
        measure_variant_memory(str(tmp_path / "missing.py"), str(tmp_path / "missing.pth"), "x", {})

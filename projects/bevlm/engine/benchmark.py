"""Side-by-side benchmark of inference variants of one trained model (see tools/benchmark.py).

A runner (it loads checkpoints, builds datasets and evaluators), so it sits in the engine layer,
above :mod:`bevlm.inference.variants` which it drives.

Baseline and variants run interleaved in one process on the same frames (frame k of every
variant before frame k+1), so machine noise hits them alike; speedups are ratios of those runs.
"""
from __future__ import annotations

import copy
import gc
import json
import os
import subprocess
import sys
import time

import torch
from mmengine.dataset import pseudo_collate
from mmengine.evaluator import Evaluator
from mmengine.registry import init_default_scope

from bevlm.inference.variants import (build_variant, check_variant, llm_read_bytes, llm_resident_bytes,
                                      llm_weight_bytes, prior_inputs, variant_inputs)
from bevlm.registry import DATASETS, MODELS
from bevlm.utils import peak_memory_mb

from .checkpoint import load_model_weights


def measure_read_bandwidth(mb: int = 256, repeats: int = 5) -> float:
    """Memory read bandwidth in GB/s (best of ``repeats`` sums over a ``mb`` MiB tensor)."""
    x = torch.ones(mb * 2**20 // 4)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        float(x.sum())
        best = min(best, time.perf_counter() - t0)
    return x.numel() * 4 / best / 1e9


def load_model(cfg, checkpoint: str):
    """The config's model with the checkpoint's weights, in eval mode.

    Args:
        cfg: the config (``cfg.model``).
        checkpoint: checkpoint file (``state_dict`` inside, or a bare state dict).

    Returns:
        The model.

    Raises:
        CheckpointMismatchError: the checkpoint's keys or shapes do not fit the model.
    """
    model = MODELS.build(cfg.model)
    load_model_weights(model, checkpoint, cfg.filename or "the config")
    return model.eval()


def rss_mb() -> tuple[float, float]:
    """``(current, peak)`` resident set size of this process in MiB (``VmRSS`` / ``VmHWM`` of
    ``/proc/self/status``; the peak from ``getrusage`` where ``/proc`` is missing)."""
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        peak = peak_memory_mb()
        return peak, peak


def reset_peak_rss() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def benchmark_frames(cfg, qa_select: str = "test", frame_stride: int = 1, max_frames: int | None = None):
    """The test split as the benchmark reads it: one item per frame with all its questions."""
    ds_cfg = cfg.test_dataloader.dataset.to_dict()
    ds_cfg.update(qa_mode="frame", qa_select=qa_select, frame_stride=frame_stride, max_frames=max_frames,
                  stream_skipped=False)  # the benchmark fills each frame's history itself
    return DATASETS.build(ds_cfg)


def release_freed_memory() -> bool:
    """Collect garbage and hand the allocator's free heap pages back to the OS (glibc ``malloc_trim``),
    so the resident set reflects live objects; False where glibc is not available."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def probe_memory(cfg, checkpoint: str, name: str, spec: dict, frames: int = 1, qa_select: str = "test",
                 frame_stride: int = 1, calib_frames: int = 4) -> dict:
    """Resident memory of one variant alone in this process (run it in a fresh one:
    :func:`measure_variant_memory`).

    The checkpoint is loaded, the variant built, the base model released and the freed heap handed
    back to the OS (:func:`release_freed_memory`; ``built_rss_mb`` is the RSS then); then the peak RSS
    is reset and ``frames`` test frames are answered. ``steady_rss_mb`` is the RSS after those frames,
    ``peak_rss_mb`` the highest RSS while answering them (what serving the variant needs), and
    ``build_peak_rss_mb`` the process peak before the reset (building holds base and variant at once).

    Returns:
        the figures above, ``peak_reset`` (whether the kernel allowed the reset; if not,
        ``peak_rss_mb`` is the process peak) and ``llm_resident_bytes``.
    """
    init_default_scope("bevlm")
    check_variant(spec, name)
    start_rss, _ = rss_mb()
    base = load_model(cfg, checkpoint)
    calib, train_qa = variant_inputs(base, cfg, [spec], calib_frames)
    prior = prior_inputs(base, cfg, [spec])
    model = build_variant(base, spec, calib, log=lambda *_: None, train_qa=train_qa, prior=prior)
    del base, calib
    trimmed = release_freed_memory()  # the float weights a quantised variant replaced go back to the OS
    dataset = benchmark_frames(cfg, qa_select, frame_stride, frames)
    built_rss, build_peak = rss_mb()
    reset = reset_peak_rss()
    for k in range(len(dataset)):
        with torch.no_grad():
            model.test_step(pseudo_collate([dataset[k]]))
    steady, peak = rss_mb()
    return {"variant": name, "frames": len(dataset), "start_rss_mb": start_rss, "build_peak_rss_mb": build_peak,
            "built_rss_mb": built_rss, "steady_rss_mb": steady, "peak_rss_mb": peak, "peak_reset": reset,
            "malloc_trim": trimmed,
            "llm_resident_bytes": llm_resident_bytes(model)}


def measure_variant_memory(config_path: str, checkpoint: str, name: str, spec: dict, frames: int = 1,
                           qa_select: str = "test", frame_stride: int = 1, timeout: float = 3600) -> dict:
    """:func:`probe_memory` of one variant in a fresh Python process (so variants do not share
    an allocator or each other's peaks).

    Raises:
        RuntimeError: the probe process failed (its stderr tail is in the message).
    """
    cmd = [sys.executable, "-m", "bevlm.engine.memory_probe", config_path, checkpoint, "--name", name,
           "--spec", json.dumps(spec), "--frames", str(frames), "--qa-select", qa_select,
           "--stride", str(frame_stride)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("MEMORY_PROBE ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"memory probe of variant {name!r} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-2000:]}")
    return json.loads(lines[-1][len("MEMORY_PROBE "):])


def run_benchmark(cfg, checkpoint: str, variants: dict[str, dict], out_dir: str, max_frames: int | None = None,
                  frame_stride: int = 1, qa_select: str = "test", calib_frames: int = 4, log=print,
                  memory_frames: int = 0, config_path: str | None = None, resamples: int = 1000) -> dict:
    """Run every variant on the same frames; write ``benchmark.json`` and ``benchmark.md``.

    With ``memory_frames > 0`` each variant is also run alone in a fresh process on that many
    frames (:func:`measure_variant_memory`, needs ``config_path``) for its resident memory.
    Every variant's answers and per-frame records are written as a test-run folder
    (``out_dir/runs/<variant>``; a batched speculative variant also writes ``draft_trace.json``, the
    input of ``tools/draft_replay.py``), from which the speed-up and the relative scores get paired
    bootstrap intervals over scenes and frames (``resamples``; :func:`add_intervals`).
    """
    init_default_scope("bevlm")
    for name, spec in variants.items():  # before anything is loaded or built
        check_variant(spec, name)
    if memory_frames and not config_path:
        raise ValueError("run_benchmark(memory_frames>0) needs config_path (the probe processes load the config)")
    memory = {}
    for name, spec in (variants.items() if memory_frames else ()):
        log(f"memory probe: {name} ({memory_frames} frame(s), own process)")
        memory[name] = measure_variant_memory(config_path, checkpoint, name, spec, memory_frames, qa_select,
                                              frame_stride)
    base = load_model(cfg, checkpoint)
    dataset = benchmark_frames(cfg, qa_select, frame_stride, max_frames)
    calib, train_qa = variant_inputs(base, cfg, list(variants.values()), calib_frames)
    prior = prior_inputs(base, cfg, list(variants.values()))
    models, evaluators, build_s = {}, {}, {}
    for name, spec in variants.items():
        t0 = time.perf_counter()
        models[name] = build_variant(base, spec, calib, log=log, train_qa=train_qa, prior=prior)
        build_s[name] = time.perf_counter() - t0
        run_dir = os.path.join(out_dir, "runs", name)  # a test-run folder per variant (for the bootstrap)
        os.makedirs(run_dir, exist_ok=True)
        if os.path.isfile(os.path.join(run_dir, "per_frame.json")):
            os.remove(os.path.join(run_dir, "per_frame.json"))  # records of an earlier benchmark
        evaluators[name] = Evaluator([dict(type="DriveLMMetric", outfile_prefix=os.path.join(run_dir, "drivelm")),
                                      dict(type="PlanningMetric", outfile_prefix=run_dir),
                                      dict(type="EfficiencyMetric", outfile_prefix=run_dir)])
    from .hooks import answer_budget_findings

    for name, model in models.items():  # references longer than a variant's decode budget are named
        answer_budget_findings(model, getattr(dataset, "data_list", None) or [], warn=lambda m, n=name: log(f"{n}: {m}"))
    for model in models.values():  # batched speculative decoders record their frames for tools/draft_replay.py
        if hasattr(model.frame_decoder, "trace"):
            model.frame_decoder.trace = []
    log(f"benchmark: {len(variants)} variants x {len(dataset)} frames (qa_select={qa_select})")
    answers = {name: [] for name in variants}  # per variant: every (frame, question) answer
    trajs = {name: [] for name in variants}
    t_frames = time.perf_counter()
    for k in range(len(dataset)):
        item = dataset[k]
        for name, model in models.items():
            batch = pseudo_collate([copy.deepcopy(item)])
            with torch.no_grad():
                outputs = model.test_step(batch)
            evaluators[name].process(data_samples=outputs, data_batch=batch)
            answers[name] += [outputs[0].pred_answers[i] for i in sorted(outputs[0].pred_answers)]
            trajs[name].append(outputs[0].pred_traj)
        spent = time.perf_counter() - t_frames  # progress with the time left at the mean pace so far
        log(f"  frame {k + 1}/{len(dataset)} ({spent / 60:.1f} min, about "
            f"{spent / (k + 1) * (len(dataset) - k - 1) / 60:.0f} min left)")
    bandwidth = measure_read_bandwidth()
    results = {}
    for name in variants:
        m = evaluators[name].evaluate(len(dataset))
        m["llm_weight_bytes"] = llm_weight_bytes(models[name])  # as stored
        m["llm_resident_bytes"] = llm_resident_bytes(models[name])  # + run-time copies of the kernels
        m["llm_read_bytes"] = llm_read_bytes(models[name])  # what one decode step streams
        m["decode_ceiling_tok_s"] = bandwidth * 1e9 / m["llm_read_bytes"]
        if name in memory:
            m["memory"] = memory[name]
        m["build_s"] = build_s[name]
        decoder = models[name].frame_decoder
        if hasattr(decoder, "stats"):  # the self-speculative decoder's acceptance counters
            m["speculative"] = decoder.stats.as_dict()
        if getattr(decoder, "trace", None):  # drafting inputs, answers and timed verify steps per frame
            with open(os.path.join(out_dir, "runs", name, "draft_trace.json"), "w") as f:
                json.dump(decoder.trace, f)
        # fidelity to the baseline: identical answers, trajectory distance
        ref = next(iter(variants))
        m["answer_agreement"] = (sum(a == b for a, b in zip(answers[name], answers[ref])) / len(answers[ref])
                                 if answers[ref] else float("nan"))
        m["traj_dev_m"] = float(torch.stack([(a - b).norm(dim=-1).mean() for a, b in
                                             zip(trajs[name], trajs[ref])]).mean()) if trajs[ref] else float("nan")
        results[name] = m
    summary = summarise(results, next(iter(variants)))
    add_intervals(summary, {name: os.path.join(out_dir, "runs", name) for name in variants}, resamples, log)
    summary["read_bandwidth_gb_s"] = bandwidth
    summary["peak_memory_mb_process"] = peak_memory_mb()
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "benchmark.json.tmp"), "w") as f:
        json.dump({"variants": variants, "results": results, "summary": summary}, f, indent=2, default=float)
    os.replace(os.path.join(out_dir, "benchmark.json.tmp"), os.path.join(out_dir, "benchmark.json"))
    table = markdown_table(summary)
    with open(os.path.join(out_dir, "benchmark.md"), "w") as f:
        f.write(table + "\n")
    log(table)
    return summary


#: Relative figures given a paired bootstrap interval: column -> (metric, invert). ``speedup`` is the
#: baseline's frame time over the variant's (inverted ratio), the others variant over baseline.
INTERVAL_COLUMNS = {"speedup": ("efficiency/frame_s", True), "rel_score": ("drivelm/gpt_free_final", False),
                    "rel_accuracy": ("drivelm/accuracy", False), "rel_language": ("drivelm/language_score", False)}


def add_intervals(summary: dict, run_dirs: dict[str, str], resamples: int = 1000, log=print) -> None:
    """Add ``<column>_lo`` / ``<column>_hi`` (95 %, paired two-stage cluster bootstrap over the test
    scenes and frames, the same resamples for every variant) to each row of ``summary``; ``rel_accuracy``
    and ``rel_language`` come with their intervals. Needs every variant's run folder on the same frames;
    with fewer than 2 scenes the intervals are left out (logged)."""
    from bevlm.evaluation.bootstrap import PairedBootstrap

    names = list(run_dirs)
    boot = PairedBootstrap([run_dirs[n] for n in names])
    if boot.n_scenes < 2:
        log(f"benchmark: {boot.n_scenes} test scene(s): no bootstrap intervals")
        return
    metrics = sorted({m for m, _ in INTERVAL_COLUMNS.values()})
    for i, name in enumerate(names):
        ratios = boot.compare_ratios(0, i, metrics, resamples=resamples)
        row = summary["rows"][name]
        for col, (metric, invert) in INTERVAL_COLUMNS.items():
            r = ratios.get(metric)
            if r is None:
                continue
            lo, hi = r["lo"], r["hi"]
            if invert:
                lo, hi = (None if hi in (None, 0) else 1.0 / hi), (None if lo in (None, 0) else 1.0 / lo)
            row.setdefault(col, r["ratio"] if not invert else (1.0 / r["ratio"] if r["ratio"] else float("nan")))
            row[f"{col}_lo"] = float("nan") if lo is None else lo
            row[f"{col}_hi"] = float("nan") if hi is None else hi
    summary["intervals"] = {"resamples": resamples, "scenes": boot.n_scenes, "frames": boot.n_frames,
                            "method": "paired two-stage cluster bootstrap (scenes, then frames), 95 %"}


def _get(m: dict, key: str, default=float("nan")):
    return m.get(key, default) if m.get(key) is not None else default


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


#: Draft sources of the self-speculative decoder (``SpecStats`` counter prefixes): prompt lookup, the
#: training-answer datastore, layer skipping, the low-precision copy of the weights, the trained draft heads.
DRAFT_SOURCES = ("ngram", "store", "skip", "quant", "heads")


def draft_source_columns(spec: dict | None) -> dict:
    """Per draft source: ``acc_<source>`` (accepted / drafted tokens, nan when it drafted nothing) and
    ``drafted_<source>`` (its share of all drafted tokens); ``draft_MB`` (the low-precision draft's
    bytes beyond the verifier's, 0 without one)."""
    spec = spec or {}
    total = spec.get("drafted", 0)
    out = {}
    for source in DRAFT_SOURCES:
        drafted = spec.get(f"{source}_drafted", 0)
        out[f"acc_{source}"] = spec.get(f"{source}_accepted", 0) / drafted if drafted else float("nan")
        out[f"drafted_{source}"] = drafted / total if total else float("nan")
    out["draft_MB"] = spec.get("draft_resident_bytes", 0) / 1e6
    return out


def summarise(results: dict, baseline: str) -> dict:
    """Rows with the ratios against ``baseline``."""
    b = results[baseline]
    rows = {}
    for name, m in results.items():
        score = _get(m, "drivelm/gpt_free_final")
        flops = _get(m, "efficiency/encoder_gflops") + _get(m, "efficiency/prefill_gflops")
        b_flops = _get(b, "efficiency/encoder_gflops") + _get(b, "efficiency/prefill_gflops")

        def enc_prefill(r, kind):  # encoder + prefill with the shared prompt text counted as `kind`
            pre = _get(r, f"efficiency/prefill_gflops_{kind}", _get(r, "efficiency/prefill_gflops"))
            return _get(r, "efficiency/encoder_gflops") + pre
        mem = m.get("memory") or {}
        b_mem = b.get("memory") or {}
        rows[name] = {
            "gpt_free": score, "rel_score": _ratio(score, _get(b, "drivelm/gpt_free_final")),
            "accuracy": _get(m, "drivelm/accuracy"), "full_acc": _get(m, "drivelm/full_accuracy"),
            "L2_stp3": _get(m, "planning/L2_avg_stp3"),
            "encoder_s": _get(m, "efficiency/encoder_s"), "prefill_s": _get(m, "efficiency/prefill_s"),
            "decode_s": _get(m, "efficiency/decode_s"), "frame_s": _get(m, "efficiency/frame_s"),
            "speedup": _ratio(_get(b, "efficiency/frame_s"), _get(m, "efficiency/frame_s")),
            "decode_speedup": _ratio(_get(b, "efficiency/decode_s"), _get(m, "efficiency/decode_s")),
            "decode_tok_s": _get(m, "efficiency/decode_tokens_per_s"),
            "ceiling_tok_s": m["decode_ceiling_tok_s"],
            "roofline_share": _ratio(_get(m, "efficiency/decode_tokens_per_s"), m["decode_ceiling_tok_s"]),
            "enc_prefill_gflops": flops, "flops_ratio": _ratio(flops, b_flops),
            "flops_ratio_amortised": _ratio(enc_prefill(m, "amortised"), enc_prefill(b, "amortised")),
            "flops_ratio_unshared": _ratio(enc_prefill(m, "unshared"), enc_prefill(b, "unshared")),
            "prefill_flops_ratio": _ratio(_get(m, "efficiency/prefill_gflops"), _get(b, "efficiency/prefill_gflops")),
            "llm_MB": m["llm_weight_bytes"] / 1e6,
            "llm_bytes_vs_fp16": m["llm_weight_bytes"] / (b["llm_weight_bytes"] / 2),
            "llm_resident_MB": m.get("llm_resident_bytes", m["llm_weight_bytes"]) / 1e6,
            "resident_vs_fp16": m.get("llm_resident_bytes", m["llm_weight_bytes"]) / (b["llm_weight_bytes"] / 2),
            "peak_rss_MB": mem.get("peak_rss_mb", float("nan")) * 2**20 / 1e6,
            "steady_rss_MB": mem.get("steady_rss_mb", float("nan")) * 2**20 / 1e6,
            "peak_rss_ratio": _ratio(mem.get("peak_rss_mb", float("nan")), b_mem.get("peak_rss_mb", float("nan"))),
            "rounds": _get(m, "efficiency/rounds_per_frame"),
            "agreement": _get(m, "answer_agreement"), "traj_dev_m": _get(m, "traj_dev_m"),
            "acceptance": (m.get("speculative") or {}).get("acceptance", float("nan")),
            "tok_per_forward": (m.get("speculative") or {}).get("tokens_per_full_forward", float("nan")),
            **draft_source_columns(m.get("speculative")),
        }
    return {"baseline": baseline, "rows": rows}


def markdown_table(summary: dict) -> str:
    cols = ["gpt_free", "rel_score", "accuracy", "rel_accuracy", "rel_language", "full_acc", "agreement", "traj_dev_m", "L2_stp3", "encoder_s", "prefill_s", "decode_s", "frame_s",
            "speedup", "decode_speedup", "decode_tok_s", "ceiling_tok_s", "roofline_share", "flops_ratio",
            "flops_ratio_amortised", "flops_ratio_unshared", "prefill_flops_ratio", "llm_MB",
            "llm_bytes_vs_fp16", "llm_resident_MB", "resident_vs_fp16", "peak_rss_MB", "steady_rss_MB",
            "peak_rss_ratio", "acceptance", "tok_per_forward"]
    cols += [f"acc_{s}" for s in DRAFT_SOURCES] + ["drafted_quant", "draft_MB"]
    def cell(row, c):
        text = f"{row.get(c, float('nan')):.4g}"
        if f"{c}_lo" in row:  # a paired bootstrap interval
            text += f" [{row[c + '_lo']:.3g}, {row[c + '_hi']:.3g}]"
        return text

    lines = ["| variant | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, row in summary["rows"].items():
        lines.append(f"| {name} | " + " | ".join(cell(row, c) for c in cols) + " |")
    return "\n".join(lines)

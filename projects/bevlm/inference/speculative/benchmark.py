"""Measure self-speculative decoding on the real default LLM (SmolLM2-135M), CPU.

Run: ``OMP_NUM_THREADS=1 python -m bevlm.inference.speculative.benchmark``.

A random prefix ``[1, P, D]`` (scaled like token embeddings) stands in for the
visual tokens; questions are DriveLM-like, some with c-tags their answers may
copy. The skip set is searched on separate calibration questions, then plain
greedy and the speculative variants are run interleaved per question on the
evaluation questions (one process, same prefix cache), so their tokens/s are
comparable. The untuned pretrained model answers differently from a model
fine-tuned on DriveLM; treat the numbers as a smoke measurement.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from bevlm.models.llm import HFCausalLM
from bevlm.models.llm.cache_api import cache_kwargs
from bevlm.models.llm.generation import fork_cache

from .decoder import SelfSpeculativeDecoder
from .search import search_skip_layers

CALIB_QUESTIONS = [
    "What are the important objects in the current scene?",
    "What is the moving status of object <c2,CAM_BACK,1088.3,497.5>?",
    "What actions could the ego vehicle take based on <c3,CAM_FRONT_LEFT,220.0,515.8>?",
]
EVAL_QUESTIONS = [
    "Is <c1,CAM_FRONT,160.3,92.1> a traffic sign or a road barrier?",
    "What is the future state of <c2,CAM_FRONT_RIGHT,1088.3,497.5>? Answer with the object tag.",
    "Which object is most important: <c1,CAM_FRONT,160.3,92.1> or <c4,CAM_BACK,640.0,480.2>?",
    "Predict the behavior of the ego vehicle.",
    "What are objects to the front of the ego car?",
]


def _timed(fn) -> tuple[list[int], float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


@torch.no_grad()
def _verify_cost(llm: HFCausalLM, cache, k: int = 4, repeats: int = 5) -> float:
    """Measured (time of a (k+1)-token forward / time of a 1-token forward - 1) / k."""
    times = {}
    for n in (1, k + 1):
        ids = torch.full((1, n), 100, dtype=torch.long)
        pos = torch.arange(cache.prefix_len, cache.prefix_len + n)[None]
        best = float("inf")
        for _ in range(repeats):
            past = fork_cache(cache.past_key_values)
            t0 = time.perf_counter()
            llm.lm(input_ids=ids, position_ids=pos, **cache_kwargs(llm.lm, past), use_cache=True, logits_to_keep=n)
            best = min(best, time.perf_counter() - t0)
        times[n] = best
    return (times[k + 1] / times[1] - 1.0) / k


def main() -> None:
    """Search a skip set, then compare greedy vs speculative tokens/s; print a table and JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-prefix", type=int, default=50)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--max-skip", type=int, default=14)
    parser.add_argument("--sample-per-round", type=int, default=8)
    parser.add_argument("--draft-len", type=int, default=None, help="override the searched draft length")
    parser.add_argument("--ngram-min-n", type=int, default=2)
    parser.add_argument("--ngram-draft-len", type=int, default=6)
    parser.add_argument("--out", type=str, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    t0 = time.perf_counter()
    llm = HFCausalLM().eval()
    print(f"loaded {llm.num_layers}-layer LLM in {time.perf_counter() - t0:.1f}s")
    scale = float(llm.lm.get_input_embeddings().weight.std())
    prefix = torch.randn(1, args.num_prefix, llm.hidden_size) * scale  # [1, P, D]
    cache = llm.prefill(prefix)
    verify_cost = _verify_cost(llm, cache)
    print(f"verify cost per extra token (measured): {verify_cost:.3f} of a 1-token forward")

    t0 = time.perf_counter()
    search = search_skip_layers(llm, [(cache, q) for q in CALIB_QUESTIONS], max_skip=args.max_skip,
                                max_new_tokens=32, sample_per_round=args.sample_per_round,
                                verify_token_cost=max(verify_cost, 0.0), measure=False)
    print(f"search ({len(search.trials)} sets, {time.perf_counter() - t0:.0f}s): skip {search.skip_layers} "
          f"draft_len {search.draft_len} expected x{search.expected_speedup:.2f} "
          f"proxy acceptance {search.acceptance:.2f} cost ratio {search.cost_ratio:.2f}")
    draft_len = args.draft_len or search.draft_len

    variants = {
        "layer_skip": SelfSpeculativeDecoder(llm, search.skip_layers, draft_len=draft_len, use_ngram=False),
        "ngram": SelfSpeculativeDecoder(llm, None, draft_len=draft_len, use_layer_skip=False,
                                        ngram_min_n=args.ngram_min_n, ngram_draft_len=args.ngram_draft_len),
        "both": SelfSpeculativeDecoder(llm, search.skip_layers, draft_len=draft_len,
                                       ngram_min_n=args.ngram_min_n, ngram_draft_len=args.ngram_draft_len),
    }
    seconds = {name: 0.0 for name in ["greedy", *variants]}
    identical = {name: True for name in variants}
    tokens = 0
    for q in EVAL_QUESTIONS:
        ref, dt = _timed(lambda: llm.generate_ids(cache, q, args.max_new_tokens))
        seconds["greedy"] += dt
        tokens += len(ref)
        print(f"  {q}\n    -> {llm.decode_ids(ref)!r} ({len(ref)} tokens)")
        for name, dec in variants.items():
            out, dt = _timed(lambda: dec.generate_ids(cache, q, args.max_new_tokens))
            seconds[name] += dt
            identical[name] = identical[name] and out == ref

    rows = []
    print(f"\n{'variant':<11} {'tok/s':>7} {'speedup':>8} {'accept':>7} {'tok/fwd':>8} {'identical':>9}")
    for name, sec in seconds.items():
        stats = variants[name].stats if name in variants else None
        row = dict(variant=name, tok_s=tokens / sec, speedup=seconds["greedy"] / sec,
                   acceptance=stats.acceptance if stats else None,
                   tokens_per_full_forward=stats.tokens_per_full_forward if stats else 1.0,
                   identical=identical.get(name, True), stats=stats.as_dict() if stats else None)
        rows.append(row)
        acc = f"{row['acceptance']:.2f}" if stats else "-"
        print(f"{name:<11} {row['tok_s']:>7.2f} {row['speedup']:>8.2f} {acc:>7} "
              f"{row['tokens_per_full_forward']:>8.2f} {str(row['identical']):>9}")
    result = dict(skip_layers=search.skip_layers, draft_len=draft_len, expected_speedup=search.expected_speedup,
                  proxy_acceptance=search.acceptance, cost_ratio=search.cost_ratio, verify_token_cost=verify_cost,
                  tokens=tokens, rows=rows,
                  trials=sorted(search.trials, key=lambda t: -t["expected_speedup"])[:15])
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()

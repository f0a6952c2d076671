"""Measure weight bytes, batch-1 decode latency and logit fidelity of quantised LLMs.

``python -m bevlm.inference.quantization.bench`` loads SmolLM2-135M (``--pretrained``:
another local model; a caller such as a test passes its own model to :func:`main`),
builds the variants fp32 / int4 RTN with the dequant kernel / int4 RTN with the
native kernel (if torch has a working one) / int8 dynamic, and times single-token decode steps after a prefix cache, with
the variants interleaved round by round in one process (so machine load hits
them alike). Fidelity: next-token top-1 agreement with fp32 and relative L2
logit error on a fixed prompt.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from .apply import QuantReport, quantize_model
from .kernels import native_int4_available
from .settings import Int8DynamicSettings, RTNSettings


def _decode_step_seconds(lm: nn.Module, past, start_pos: int, steps: int, token: int) -> list[float]:
    """Seconds per single-token forward with a KV cache, ``steps`` steps from ``start_pos``."""
    from bevlm.models.llm.cache_api import cache_kwargs
    from bevlm.models.llm.generation import fork_cache

    cache = fork_cache(past)
    ids = torch.tensor([[token]])  # [1, 1]
    times = []
    with torch.no_grad():
        for i in range(steps):
            t0 = time.perf_counter()
            lm(input_ids=ids, position_ids=torch.tensor([[start_pos + i]]), **cache_kwargs(lm, cache), use_cache=True,
               logits_to_keep=1)
            times.append(time.perf_counter() - t0)
    return times


def build_variants(llm: nn.Module, group_size: int) -> tuple[dict[str, nn.Module], dict[str, QuantReport]]:
    """fp32 + quantised deep copies of an ``HFCausalLM``.

    Args:
        llm: the float ``HFCausalLM`` (kept as the ``'fp32'`` variant).
        group_size: int4 group size (divides the LLM's Linear input widths).

    Returns:
        ``(variants, reports)``: name -> model, name -> :class:`QuantReport` of the quantised ones.
    """
    variants, reports = {"fp32": llm}, {}
    specs = [("int4-dequant", RTNSettings(group_size=group_size, kernel="dequant"))]
    hidden = int(llm.hidden_size)
    if native_int4_available(torch.device("cpu"), group_size, hidden):
        specs.append(("int4-native", RTNSettings(group_size=group_size, kernel="native")))
    specs.append(("int8-dynamic", Int8DynamicSettings()))
    for name, settings in specs:
        model = copy.deepcopy(llm)
        try:
            reports[name] = quantize_model(model, settings)
            prefix = torch.randn(1, 4, hidden)
            model.prefill(prefix)  # resolves kernels ('native' raises here if it does not verify)
            model.lm(input_ids=torch.tensor([[5]]))
        except RuntimeError as exc:
            print(f"[bench] {name}: skipped ({exc})")
            continue
        variants[name] = model
    return variants, reports


def main(argv: list[str] | None = None, llm: nn.Module | None = None) -> None:
    """Entry point; prints one table.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).
        llm: the float ``HFCausalLM`` to benchmark (eval mode); ``None``: load ``--pretrained``.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", default="smollm2",
                        help="HFCausalLM `pretrained`: 'smollm2', a local model directory or a cached hub id")
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--prefix-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if llm is None:
        from bevlm.models.llm import HFCausalLM

        llm = HFCausalLM(pretrained=args.pretrained).eval()
    variants, reports = build_variants(llm, args.group_size)

    text = ("The ego vehicle is driving straight at normal speed. There is a white sedan to the front "
            "and a pedestrian crossing to the left. The ego vehicle should slow down and yield.")
    ids = torch.tensor([llm.tokenizer(text, add_special_tokens=False)["input_ids"]])  # [1, L]
    with torch.no_grad():
        ref = llm.lm(input_ids=ids).logits[0]  # [L, V]
    fidelity = {}
    for name, model in variants.items():
        with torch.no_grad():
            out = model.lm(input_ids=ids).logits[0]
        fidelity[name] = (float((out.argmax(-1) == ref.argmax(-1)).float().mean()),
                          float((out - ref).norm() / ref.norm()))

    prefix = torch.randn(1, args.prefix_len, llm.hidden_size) * 0.02
    caches = {name: model.prefill(prefix) for name, model in variants.items()}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):  # interleaved
        for name, model in variants.items():
            cache = caches[name]
            times[name] += _decode_step_seconds(model.lm, cache.past_key_values, cache.prefix_len, args.steps, 42)

    base = statistics.median(times["fp32"])
    print(f"\nbatch-1 decode step after a {args.prefix_len}-position prefix cache; threads={args.threads}; "
          f"group_size={args.group_size}; median over {args.rounds}x{args.steps} steps")
    print(f"{'variant':14s} {'ms/token':>9s} {'vs fp32':>8s} {'linear MB':>10s} {'(fp16 MB)':>10s} "
          f"{'model MB':>9s} {'top1 agree':>10s} {'rel L2 err':>10s}")
    for name in variants:
        med = statistics.median(times[name])
        rep = reports.get(name)
        lin = f"{rep.linear_bytes_after / 1e6:10.2f} {rep.linear_bytes_fp16 / 1e6:10.2f}" if rep else f"{'-':>10s} {'-':>10s}"
        model_mb = (rep.module_bytes_after if rep else next(iter(reports.values())).module_bytes_before) / 1e6
        print(f"{name:14s} {med * 1e3:9.2f} {base / med:7.2f}x {lin} {model_mb:9.1f} "
              f"{fidelity[name][0]:10.3f} {fidelity[name][1]:10.4f}")
    for name, model in variants.items():
        for mod_name, mod in model.named_modules():
            if hasattr(mod, "resolved_kernels") and mod.resolved_kernels:
                print(f"{name}: first quantised layer {mod_name} uses {mod.resolved_kernels}")
                break


if __name__ == "__main__":
    main()

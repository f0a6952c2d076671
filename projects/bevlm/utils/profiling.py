"""Timing, FLOP counting and memory helpers for efficiency reports.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (exact and repeatable);
wall time on shared machines is noisy, so speedups are only reported as ratios measured side by
side in one process (see ``tools/benchmark.py``).
"""
from __future__ import annotations

import resource
import sys
import time
from collections import defaultdict
from contextlib import contextmanager

import torch
from torch.utils.flop_counter import FlopCounterMode


class Stopwatch:
    """Accumulates wall time per named phase (``encoder``, ``prefill``, ``decode``...)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def phase(self, name: str):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.seconds[name] += time.perf_counter() - t0

    def as_dict(self) -> dict[str, float]:
        return dict(self.seconds)


@contextmanager
def count_flops(module: torch.nn.Module | None = None):
    """Context manager yielding a dict that receives ``{"flops": total}`` on exit.

    Args:
        module: the model being measured. Its parameters are marked ``requires_grad=False``
            while counting (and restored after): FlopCounterMode's module tracker cannot hook
            a trainable leaf parameter passed between modules under ``no_grad``.
    """
    params = [p for p in module.parameters() if p.requires_grad] if module is not None else []
    for p in params:
        p.requires_grad_(False)
    result = {}
    mode = FlopCounterMode(display=False)
    try:
        with mode:
            yield result
    finally:
        for p in params:
            p.requires_grad_(True)
    result["flops"] = int(mode.get_total_flops())


def peak_memory_mb() -> float:
    """Peak memory of this process in MiB (GPU allocator peak if CUDA is in use, else max RSS)."""
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        return torch.cuda.max_memory_allocated() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 if sys.platform != "darwin" else rss / 2**20


def cpu_model_and_flags() -> tuple[str, set]:
    """The CPU model name and its feature flags from /proc/cpuinfo (the first processor); the
    platform's processor name and no flags where that file cannot be read."""
    import platform

    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and cpu in ("", platform.machine(), platform.processor()):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return cpu, flags


def machine_info() -> dict:
    """The machine a result was measured on: CPU model, cores, the vector extensions that change
    numerics and speed (AVX2 / AVX-512 / AVX512-BF16 / AMX), torch and Python versions, and the GPU
    when one is visible. Runs of different CPUs are compared across seeds, not frame by frame."""
    import os
    import platform

    cpu, flags = cpu_model_and_flags()
    info = {"cpu": cpu, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "isa": [name for name, flag in (("avx2", "avx2"), ("avx512", "avx512f"), ("avx512_bf16", "avx512_bf16"),
                                            ("amx", "amx_tile")) if flag in flags],
            "torch": torch.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info

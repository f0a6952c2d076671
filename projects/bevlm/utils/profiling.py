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

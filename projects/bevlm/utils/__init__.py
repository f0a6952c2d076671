from .profiling import Stopwatch, count_flops, peak_memory_mb

__all__ = ["Stopwatch", "count_flops", "peak_memory_mb"]

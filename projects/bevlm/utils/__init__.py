from .file_io import (UnsafePickleError, atomic_write, atomic_write_json, dump_plain_pickle,
                      load_plain_pickle)
from .profiling import Stopwatch, count_flops, machine_info, peak_memory_mb

__all__ = ["Stopwatch", "count_flops", "machine_info", "peak_memory_mb", "atomic_write", "atomic_write_json",
           "dump_plain_pickle", "load_plain_pickle", "UnsafePickleError"]

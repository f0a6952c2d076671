"""Per-frame efficiency figures collected from the model's ``efficiency`` field."""
from __future__ import annotations

import json
import os

import numpy as np
from mmengine.evaluator import BaseMetric

from bevlm.registry import METRICS
from bevlm.utils import peak_memory_mb


@METRICS.register_module()
class EfficiencyMetric(BaseMetric):
    """Mean per-frame latency split (encoder / prefill / decode / trajectory), decode tokens/s, FLOPs, memory.

    ``traj_s`` is the trajectory readout: the head's MLP, or decoding the text waypoints.

    Args:
        outfile_prefix: folder to write ``efficiency.json`` into (None = do not write).
    """

    default_prefix = "efficiency"

    def __init__(self, outfile_prefix: str | None = None, collect_device: str = "cpu",
                 prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.outfile_prefix = outfile_prefix

    def process(self, data_batch, data_samples) -> None:
        for s in data_samples:
            if "efficiency" in s:
                self.results.append(dict(s["efficiency"]))

    def compute_metrics(self, results: list) -> dict:
        if not results:
            return {}
        mean = lambda k: float(np.mean([r.get(k, 0.0) for r in results]))  # noqa: E731
        out = {
            "frames": len(results),
            "encoder_s": mean("encoder_s"), "prefill_s": mean("prefill_s"), "decode_s": mean("decode_s"),
            "traj_s": mean("traj_s"), "traj_tokens_per_frame": mean("traj_tokens"),
            "history_s": mean("history_s"),  # cache fill on subsampled splits, not in frame_s
            "frame_s": mean("encoder_s") + mean("prefill_s") + mean("decode_s") + mean("traj_s"),
            "questions_per_frame": mean("questions"), "tokens_per_frame": mean("tokens"),
            "rounds_per_frame": mean("rounds"),
            "prefix_tokens": mean("prefix_tokens"), "peak_memory_mb": peak_memory_mb(),
        }
        out["decode_tokens_per_s"] = out["tokens_per_frame"] / max(out["decode_s"], 1e-9)
        counted = [r for r in results if "encoder" in r]
        if counted:
            out["encoder_gflops"] = float(np.mean([r["encoder"] for r in counted])) / 1e9
            out["prefill_gflops"] = float(np.mean([r["prefill"] for r in counted])) / 1e9
        if self.outfile_prefix:
            os.makedirs(self.outfile_prefix, exist_ok=True)
            tmp = os.path.join(self.outfile_prefix, "efficiency.json.tmp")
            with open(tmp, "w") as f:
                json.dump(out, f, indent=2)
            os.replace(tmp, os.path.join(self.outfile_prefix, "efficiency.json"))
        return out

"""Per-frame efficiency figures collected from the model's ``efficiency`` field.

With ``outfile_prefix`` the metric writes the means to ``efficiency.json`` and each frame's
figures (keyed by frame token, with its scene token) into the ``efficiency`` section of
``per_frame.json`` in the same folder.
"""
from __future__ import annotations

import os

import numpy as np
from mmengine.evaluator import BaseMetric

from bevlm.registry import METRICS
from bevlm.structures import scored_samples
from bevlm.utils import peak_memory_mb
from .drivelm_files import atomic_write_json, update_per_frame

#: Per-frame seconds that make up ``frame_s`` (``history_s``, the cache fill, is not part of it).
FRAME_PHASES = ("encoder_s", "prefill_s", "decode_s", "traj_s")


def shared_prompt_accounting(results: list, counted: list, prefill_gflops: float) -> dict:
    """Prefill FLOPs with the shared prompt text counted two ways.

    ``prefill_gflops`` is what a frame's own prefill runs. With the prompt-text cache
    (``share_prompt_cache``) the system turn is prefilled once per model / adapter, outside every
    frame; ``prefill_gflops_unshared`` adds one text prefill to every frame (the cost without the
    cache), ``prefill_gflops_amortised`` adds the text prefills the run actually spent (at least one)
    spread over its frames. Without the cache all three are equal.

    Args:
        results: every frame's record (``shared_prompt_spent``: FLOPs of text caches built while
            answering it).
        counted: the records with counted FLOPs (``shared_prompt``: one text prefill's FLOPs).
        prefill_gflops: mean of the counted frames' own prefill, GFLOPs.
    """
    shared = float(np.mean([r.get("shared_prompt", 0) for r in counted])) / 1e9
    spent = float(sum(r.get("shared_prompt_spent", 0) for r in results)) / 1e9
    spent = max(spent, shared)  # a cache built before the first frame still counts once
    return {"shared_prompt_gflops": shared,
            "prefill_gflops_unshared": prefill_gflops + shared,
            "prefill_gflops_amortised": prefill_gflops + spent / len(results)}


@METRICS.register_module()
class EfficiencyMetric(BaseMetric):
    """Mean per-frame latency split (encoder / prefill / decode / trajectory), decode tokens/s, FLOPs, memory.

    ``traj_s`` is the trajectory readout: the head's MLP, or decoding the text waypoints.

    Args:
        outfile_prefix: folder to write ``efficiency.json`` and the ``efficiency`` section of
            ``per_frame.json`` into (None = do not write).
    """

    default_prefix = "efficiency"

    def __init__(self, outfile_prefix: str | None = None, collect_device: str = "cpu",
                 prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.outfile_prefix = outfile_prefix

    def process(self, data_batch, data_samples) -> None:
        for s in scored_samples(data_samples):  # history-only frames: their time is history_s
            if "efficiency" in s:
                rec = dict(s["efficiency"])
                rec["_token"], rec["_scene_token"] = str(s.get("token", "")), str(s.get("scene_token", ""))
                self.results.append(rec)

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
            out.update(shared_prompt_accounting(results, counted, out["prefill_gflops"]))
        if self.outfile_prefix:
            atomic_write_json(out, os.path.join(self.outfile_prefix, "efficiency.json"))
            self._write_records(results)
        return out

    def _write_records(self, results: list) -> None:
        """Per-frame figures (``frame_s`` = the sum of :data:`FRAME_PHASES`) into ``per_frame.json``."""
        records = {}
        for r in results:
            if not r["_token"]:
                raise KeyError("EfficiencyMetric: a data sample lacks 'token', needed for the per-frame records "
                               "of per_frame.json. Fix: pack samples with PackDriveInputs, or set "
                               "outfile_prefix=None")
            rec = {"scene_token": r["_scene_token"]}
            for k, v in r.items():
                if not k.startswith("_") and isinstance(v, (int, float, np.integer, np.floating)):
                    rec[k] = v.item() if hasattr(v, "item") else v
            rec["frame_s"] = float(sum(float(r.get(k, 0.0)) for k in FRAME_PHASES))
            records[r["_token"]] = rec
        update_per_frame(self.outfile_prefix, "efficiency", records)

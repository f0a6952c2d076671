"""Post-training quantisation of a trained BEVVLM's LLM, with calibration on training frames."""
from __future__ import annotations

import torch
from torch import nn

from .quantization import DEFAULT_INCLUDE, QuantReport, merge_lora_, quantize_model


@torch.no_grad()
def calibration_prefixes(model: nn.Module, batches: list[dict], max_questions: int = 8) -> list:
    """``[(prefix_embeds [1, P, D], questions)]`` of calibration frames (vision runs once here)."""
    out = []
    for batch in batches:
        data = model.data_preprocessor(batch, False)
        imgs, samples = data["inputs"]["imgs"], data["data_samples"]
        vis, _ = model.visual_tokens(imgs, samples)
        prefix = model.build_prefix(vis, samples)
        for i, sample in enumerate(samples):
            out.append((prefix[i:i + 1], [qa.question for qa in sample.qa[:max_questions]]))
    return out


def quantize_bevvlm(model: nn.Module, method: str = "rtn", bits: int = 4, group_size: int = 64,
                    include: tuple = DEFAULT_INCLUDE, kernel: str = "auto",
                    calib: list | None = None, calib_tokens: int = 8,
                    sequential: bool = True, embeddings: bool = False) -> QuantReport:
    """Merge LoRA into the LLM and quantise its linear layers in place.

    Args:
        model: a trained :class:`BEVVLM` (eval mode).
        method: 'rtn' | 'gptq' | 'int8_dynamic' (see :func:`quantize_model`).
        bits, group_size, include, kernel, sequential, embeddings: as :func:`quantize_model`
            (SmolLM2's width 576 needs a group size dividing it, e.g. 64).
        calib: output of :func:`calibration_prefixes` (needed by GPTQ): each calibration run
            prefills these frames and greedily answers their questions for ``calib_tokens``.
    """
    merge_lora_(model.llm)
    llm = model.llm

    def calib_fn(_module):
        with torch.no_grad():
            for prefix, questions in calib or []:
                cache = llm.prefill(prefix)
                if questions:
                    llm.generate_ids_batch(cache, questions, calib_tokens)

    if method == "gptq" and not calib:
        raise ValueError("method='gptq' needs calibration frames (calib=calibration_prefixes(...))")
    return quantize_model(llm, method=method, bits=bits, group_size=group_size, include=include,
                          calib_fn=calib_fn if method == "gptq" else None, kernel=kernel,
                          sequential=sequential, embeddings=embeddings)

"""Post-training quantisation of a trained BEVVLM's LLM, with calibration on training frames."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .quantization import DEFAULT_INCLUDE, QuantReport, merge_lora_, quantize_model


class CalibFrame(NamedTuple):
    """One calibration frame: its LLM prefix and (question, reference answer) pairs."""

    prefix: torch.Tensor  # [1, P, D] visual (+ ego / trajectory) prefix embeddings
    questions: list[str]
    answers: list[str]


@torch.no_grad()
def calibration_prefixes(model: nn.Module, batches: list[dict], max_questions: int = 16) -> list[CalibFrame]:
    """:class:`CalibFrame` s of training frames (vision runs once here), up to ``max_questions`` QA each."""
    out = []
    for batch in batches:
        data = model.data_preprocessor(batch, False)
        imgs, samples = data["inputs"]["imgs"], data["data_samples"]
        vis, _ = model.visual_tokens(imgs, samples)
        prefix = model.build_prefix(vis, samples)
        for i, sample in enumerate(samples):
            qa = sample.qa[:max_questions]
            out.append(CalibFrame(prefix[i:i + 1], [x.question for x in qa], [x.answer for x in qa]))
    return out


CALIB_MODES = ("teacher_forced", "greedy")
#: dtype of LoRA adapters kept beside an int4 base (``keep_lora=True``)
DEFAULT_LORA_DTYPE = "bfloat16"


def _cast_lora_(llm: nn.Module, dtype: str | None) -> None:
    """Cast every LoRA adapter parameter of ``llm`` to ``dtype`` in place (``None``: keep)."""
    if dtype is None:
        return
    for name, param in llm.named_parameters():
        if ".lora_" in name:
            param.data = param.data.to(getattr(torch, dtype))


def quantize_bevvlm(model: nn.Module, method: str = "rtn", bits: int = 4, group_size: int = 64,
                    include: tuple = DEFAULT_INCLUDE, kernel: str = "auto",
                    calib: list | None = None, calib_mode: str = "teacher_forced", calib_tokens: int = 8,
                    sequential: bool = True, embeddings: bool | str = False, clip_search: int = 0,
                    act_order: bool = False, zero_point: str = "int", keep_lora: bool = False,
                    lora_dtype: str | None = DEFAULT_LORA_DTYPE, group_sizes: dict | None = None,
                    embed_group_size: int | None = None) -> QuantReport:
    """Quantise the LLM's linear layers in place, LoRA merged into them or kept beside them.

    Args:
        model: a trained :class:`BEVVLM` (eval mode).
        method: 'rtn' | 'gptq' | 'int8_dynamic' (see :func:`quantize_model`).
        bits, group_size, include, kernel, sequential, embeddings, clip_search, act_order,
            zero_point, group_sizes, embed_group_size: as :func:`quantize_model` (SmolLM2's
            width 576 needs group sizes dividing it, e.g. 32, 64 or 192).
        keep_lora: ``False``: merge the (single) LoRA adapter into the base weights, then quantise
            them (a model with several adapters is refused: merging keeps only one).
            ``True``: quantise the base layers only and keep every adapter unmerged beside them,
            in ``lora_dtype`` (QLoRA-style; domain adapters stay switchable). The merged
            weight ``W + BA`` is off the base model's grid, so this is also the way to keep a base
            that was shipped in 4 bits exact (``zero_point='offset'``, ``group_size=32`` for
            SmolLM2's Q4_1 file).
        lora_dtype: dtype of the kept adapters (``None``: as trained). peft runs an adapter in its
            own dtype; bf16 (the default) halves their bytes and is fast on CPUs with bf16 units,
            fp16 matmuls are slow on most CPUs.
        calib: output of :func:`calibration_prefixes` (needed by GPTQ).
        calib_mode: how GPTQ's layer inputs are produced from ``calib``:
            'teacher_forced': one packed forward per frame over its prefix and its (question,
            reference answer) pairs, in the format the model was trained on (every answer token
            is a calibration row; no padding rows); 'greedy': the frame prefilled, then each
            question answered alone (batch 1) for ``calib_tokens`` greedy tokens.
    """
    if calib_mode not in CALIB_MODES:
        raise ValueError(f"quantize_bevvlm: calib_mode={calib_mode!r} is not one of {CALIB_MODES}")
    llm = model.llm
    adapters = list(getattr(llm, "adapter_names", None) or [])
    if keep_lora:
        if not adapters:
            raise ValueError("quantize_bevvlm(keep_lora=True): the LLM has no LoRA adapters; use keep_lora=False")
        _cast_lora_(llm, lora_dtype)
    else:
        if len(adapters) > 1:
            raise ValueError(f"quantize_bevvlm: the LLM has {len(adapters)} LoRA adapters {adapters}; merging keeps "
                             "only the active one. Pass keep_lora=True (quant.keep_lora=True) to quantise the base "
                             "and keep every adapter")
        merge_lora_(llm)

    def calib_fn(_module):
        with torch.no_grad():
            for frame in calib or []:
                if calib_mode == "teacher_forced":
                    batch = llm.build_batch([list(zip(frame.questions, frame.answers))], frame.prefix.shape[1])
                    llm.answer_logits(batch, frame.prefix)
                else:
                    cache = llm.prefill(frame.prefix)
                    for q in frame.questions:
                        llm.generate_ids(cache, q, calib_tokens)

    if method == "gptq" and not calib:
        raise ValueError("method='gptq' needs calibration frames (calib=calibration_prefixes(...))")
    return quantize_model(llm, method=method, bits=bits, group_size=group_size, include=include,
                          calib_fn=calib_fn if method == "gptq" else None, kernel=kernel,
                          sequential=sequential, embeddings=embeddings, clip_search=clip_search,
                          act_order=act_order, zero_point=zero_point, lora_base=keep_lora,
                          group_sizes=group_sizes, embed_group_size=embed_group_size)


def save_quantized_llm(model: nn.Module, path: str, spec: dict) -> dict:
    """Save the quantised LLM of ``model`` (after :func:`quantize_bevvlm` with ``spec``) to one
    safetensors file, atomically; ``spec`` is stored with it, so :func:`load_quantized_llm` can
    rebuild the same structure (merged or kept LoRA) around a model built from the config."""
    from .quantization import save_quantized

    return save_quantized(model.llm, path, extra=dict(quant_spec=dict(spec)))


def load_quantized_llm(model: nn.Module, path: str, kernel: str | None = None) -> dict:
    """Replace the LLM of a freshly built (or float-checkpoint-loaded) ``model`` by the quantised
    one of :func:`save_quantized_llm`, in place; returns the stored quantisation spec.

    The vision side keeps what ``model`` holds (load the training checkpoint first); every LLM
    tensor comes from the file.
    """
    from .quantization import load_quantized, read_quant_config

    spec = (read_quant_config(path).get("extra") or {}).get("quant_spec")
    if not spec:
        raise ValueError(f"{path}: no quant_spec in its metadata; write it with "
                         "bevlm.inference.ptq.save_quantized_llm (tools/quantize.py)")
    llm = model.llm
    if spec.get("keep_lora"):  # the adapters in the dtype they were saved in
        _cast_lora_(llm, spec.get("lora_dtype", DEFAULT_LORA_DTYPE))
    else:
        merge_lora_(llm)
    load_quantized(llm, path, kernel=kernel or spec.get("kernel", "auto"))
    return spec

"""Post-training quantisation of a trained BEVVLM's LLM, with calibration on training frames."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .quantization import QuantReport, cast_lora_, merge_lora_, quantize_model
from .quantization.settings import CALIB_MODES, GPTQSettings, QuantSettings, quant_settings

__all__ = ["CALIB_MODES", "CalibFrame", "calibration_prefixes", "load_quantized_llm", "quantize_bevvlm",
           "save_quantized_llm"]


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
        vis, bev = model.visual_tokens(imgs, samples)
        prefix = model.build_prefix(vis, samples, bev)
        for i, sample in enumerate(samples):
            qa = sample.qa[:max_questions]
            out.append(CalibFrame(prefix[i:i + 1], [x.question for x in qa], [x.answer for x in qa]))
    return out


def _settings_arg(settings: QuantSettings | dict | None, options: dict, where: str) -> QuantSettings:
    """The settings object of a call that passes either ``settings`` or their keys as keywords."""
    if settings is not None and options:
        raise ValueError(f"{where}: pass the quant settings once, either as `settings` or as keyword arguments, "
                         f"not both (got settings and {sorted(options)})")
    if settings is None and not options:
        raise ValueError(f"{where}: no quant settings; pass e.g. RTNSettings(group_size=64) or "
                         "dict(method='rtn', group_size=64)")
    return quant_settings(settings if settings is not None else options)


def quantize_bevvlm(model: nn.Module, settings: QuantSettings | dict | None = None, calib: list | None = None,
                    **options) -> QuantReport:
    """Quantise the LLM's linear layers in place, LoRA merged into them or kept beside them.

    Args:
        model: a trained :class:`BEVVLM` (eval mode).
        settings: :class:`RTNSettings`, :class:`GPTQSettings` or :class:`Int8DynamicSettings`,
            or their dict form (a variant's ``quant`` switch); see
            :mod:`bevlm.inference.quantization.settings`. SmolLM2's width 576 needs group sizes
            dividing it, e.g. 32, 64 or 192. ``keep_lora=False`` merges the (single) LoRA adapter
            into the base weights, then quantises them (a model with several adapters is refused:
            merging keeps only one); ``keep_lora=True`` quantises the base layers only and keeps
            every adapter unmerged beside them in ``lora_dtype`` (QLoRA-style; domain adapters stay
            switchable). The merged weight ``W + BA`` is off the base model's grid, so this is also
            the way to keep a base that was shipped in 4 bits exact (``zero_point='offset'``,
            ``group_size=32`` for SmolLM2's Q4_1 file). With GPTQ, ``calib_mode`` says how the
            layer inputs are produced from ``calib``: ``'teacher_forced'``: one packed forward per
            frame over its prefix and its (question, reference answer) pairs, in the format the
            model was trained on (every answer token is a calibration row; no padding rows);
            ``'greedy'``: the frame prefilled, then each question answered alone (batch 1) for
            ``calib_tokens`` greedy tokens.
        calib: output of :func:`calibration_prefixes` (needed by GPTQ).
        **options: instead of ``settings``, its dict form as keyword arguments
            (``quantize_bevvlm(model, calib=calib, **variant["quant"])``).

    Returns:
        the :class:`QuantReport` of :func:`quantize_model`.
    """
    settings = _settings_arg(settings, options, "quantize_bevvlm")
    is_gptq = isinstance(settings, GPTQSettings)
    if is_gptq and not calib:
        raise ValueError("quantize_bevvlm(method='gptq') needs calibration frames (calib=calibration_prefixes(...))")
    llm = model.llm
    adapters = list(getattr(llm, "adapter_names", None) or [])
    if settings.keep_lora:
        if not adapters:
            raise ValueError("quantize_bevvlm(keep_lora=True): the LLM has no LoRA adapters; use keep_lora=False")
    else:
        if len(adapters) > 1:
            raise ValueError(f"quantize_bevvlm: the LLM has {len(adapters)} LoRA adapters {adapters}; merging keeps "
                             "only the active one. Pass keep_lora=True (quant.keep_lora=True) to quantise the base "
                             "and keep every adapter")
        merge_lora_(llm)

    def calib_fn(_module):
        with torch.no_grad():
            for frame in calib or []:
                if settings.calib_mode == "teacher_forced":
                    batch = llm.build_batch([list(zip(frame.questions, frame.answers))], frame.prefix.shape[1])
                    llm.answer_logits(batch, frame.prefix)
                else:
                    cache = llm.prefill(frame.prefix)
                    for q in frame.questions:
                        llm.generate_ids(cache, q, settings.calib_tokens)

    def loss_fn(_module):  # sensitivity='fisher': the reference answers' loss, backpropagated frame by frame
        for frame in calib or []:
            batch = llm.build_batch([list(zip(frame.questions, frame.answers))], frame.prefix.shape[1])
            logits, targets = llm.answer_logits(batch, frame.prefix.detach().clone().requires_grad_(True))
            torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum").backward()

    fisher = is_gptq and settings.group_budget is not None and settings.sensitivity == "fisher"
    return quantize_model(llm, settings, calib_fn=calib_fn if is_gptq else None, loss_fn=loss_fn if fisher else None)


def save_quantized_llm(model: nn.Module, path: str, settings: QuantSettings | dict) -> dict:
    """Save the quantised LLM of ``model`` to one safetensors file, atomically.

    Args:
        model: a :class:`BEVVLM` after :func:`quantize_bevvlm` with ``settings``.
        path: target ``.safetensors`` file.
        settings: the settings it was quantised with (object or dict form); stored with the file,
            so :func:`load_quantized_llm` rebuilds the same structure (merged or kept LoRA) around
            a model built from the config.

    Returns:
        the JSON config stored in the file's metadata.
    """
    from .quantization import save_quantized

    return save_quantized(model.llm, path, settings=quant_settings(settings))


def load_quantized_llm(model: nn.Module, path: str, kernel: str | None = None) -> QuantSettings:
    """Replace the LLM of a freshly built (or float-checkpoint-loaded) ``model`` by the quantised
    one of :func:`save_quantized_llm`, in place.

    The vision side keeps what ``model`` holds (load the training checkpoint first); every LLM
    tensor comes from the file.

    Args:
        model: a :class:`BEVVLM` built from the same config.
        path: the file of :func:`save_quantized_llm`.
        kernel: int4 compute kernel (``None``: the one it was quantised with).

    Returns:
        the stored quantisation settings.
    """
    from .quantization import load_quantized, read_quant_config, read_quant_settings

    settings = read_quant_settings(path)
    if settings is None:  # a file written before the settings were stored: its quant spec dict
        spec = (read_quant_config(path).get("extra") or {}).get("quant_spec")
        settings = quant_settings(spec) if spec else None
    if settings is None:
        raise ValueError(f"{path}: no quantisation settings in its metadata; write it with "
                         "bevlm.inference.ptq.save_quantized_llm (tools/quantize.py)")
    llm = model.llm
    if settings.keep_lora:  # the adapters in the dtype they were saved in
        cast_lora_(llm, settings.lora_dtype)
    else:
        merge_lora_(llm)
    load_quantized(llm, path, kernel=kernel or settings.kernel)
    return settings

"""Training hooks."""
from __future__ import annotations

import json
import os

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook

from bevlm.registry import HOOKS


@HOOKS.register_module()
class ParamChecksumHook(Hook):
    """Write a checksum of the trainable parameters of each rank after training.

    In DDP every rank must end with identical weights; comparing the files
    ``param_checksum_rank{r}.json`` checks that the gradient all-reduce really happened.
    """

    def after_train(self, runner) -> None:
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        params = [p.detach().double().flatten() for p in model.parameters() if p.requires_grad]
        flat = torch.cat(params)
        record = {"rank": get_rank(), "sum": float(flat.sum()), "abs_sum": float(flat.abs().sum()),
                  "numel": int(flat.numel())}
        path = os.path.join(runner.work_dir, f"param_checksum_rank{get_rank()}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.replace(path + ".tmp", path)


@HOOKS.register_module()
class PostTrainingQuantHook(Hook):
    """Quantise the LLM of the loaded model right before testing (PTQ, no training).

    Calibration frames (for GPTQ) come from the *training* split, never from the evaluated one.

    Args:
        method: 'rtn' | 'gptq' | 'int8_dynamic'.
        bits: weight bits (4).
        group_size: quantisation group size (must divide the LLM width; 64 for SmolLM2).
        kernel: 'auto' | 'dequant' | 'native' compute kernel of the int4 layers.
        calib_frames: number of training frames used for calibration.
        embeddings: also quantise the embedding table (and the tied LM head): ``True`` / ``'int4'``
            or ``'int8'``.
        clip_search, calib_mode, act_order, zero_point, keep_lora, lora_dtype: see
            :func:`bevlm.inference.ptq.quantize_bevvlm`.
    """

    priority = "VERY_HIGH"

    def __init__(self, method: str = "rtn", bits: int = 4, group_size: int = 64, kernel: str = "auto",
                 calib_frames: int = 4, embeddings: bool | str = False, clip_search: int = 0,
                 calib_mode: str = "teacher_forced", act_order: bool = False, zero_point: str = "int",
                 keep_lora: bool = False, lora_dtype: str | None = "bfloat16") -> None:
        self.method, self.bits, self.group_size = method, bits, group_size
        self.embeddings = embeddings
        self.options = dict(clip_search=clip_search, calib_mode=calib_mode, act_order=act_order,
                            zero_point=zero_point, keep_lora=keep_lora, lora_dtype=lora_dtype)
        self.kernel, self.calib_frames = kernel, calib_frames

    def before_test(self, runner) -> None:

        from bevlm.inference.ptq import quantize_bevvlm
        from bevlm.inference.variants import variant_inputs

        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        model.eval()
        calib = None
        if self.method == "gptq":
            calib, _ = variant_inputs(model, runner.cfg, [dict(quant=dict(method="gptq"))], self.calib_frames)
        report = quantize_bevvlm(model, self.method, self.bits, self.group_size, kernel=self.kernel,
                                 calib=calib, embeddings=self.embeddings, **self.options)
        runner.logger.info("post-training quantisation:\n" + report.table())


@HOOKS.register_module()
class QuantizedLLMHook(Hook):
    """Swap in the quantised LLM of ``tools/quantize.py`` after the checkpoint is loaded (the
    vision side stays the checkpoint's), right before testing.

    Args:
        path: the ``.safetensors`` file of :func:`bevlm.inference.ptq.save_quantized_llm`.
        kernel: int4 compute kernel (default: the one it was quantised with).
    """

    priority = "VERY_HIGH"

    def __init__(self, path: str, kernel: str | None = None) -> None:
        self.path, self.kernel = path, kernel

    def before_test(self, runner) -> None:
        from bevlm.inference.ptq import load_quantized_llm

        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        model.eval()
        spec = load_quantized_llm(model, self.path, self.kernel)
        runner.logger.info(f"quantised LLM loaded from {self.path}: {spec}")


@HOOKS.register_module()
class InferenceVariantHook(Hook):
    """Apply an inference variant (see :mod:`bevlm.inference.variants`) to the loaded model right
    before testing, e.g. the lossless stack (shared prompt cache + batched speculative decoding),
    so ``tools/test.py --variant NAME`` evaluates the model as ``tools/benchmark.py`` runs it.

    Calibration frames and the speculative answer datastore come from the *training* split.

    Args:
        variant: the variant's switches (a dict of :data:`VARIANT_KEYS`).
        name: its name, for the log.
        calib_frames: training frames used for calibration (GPTQ, skip-layer search).
    """

    priority = "VERY_HIGH"

    def __init__(self, variant: dict, name: str = "variant", calib_frames: int = 4) -> None:
        from bevlm.inference.variants import VARIANT_KEYS

        unknown = set(variant) - set(VARIANT_KEYS)
        if unknown:
            raise KeyError(f"InferenceVariantHook({name}): unknown variant keys {sorted(unknown)}; "
                           f"allowed: {VARIANT_KEYS}")
        self.variant, self.name, self.calib_frames = dict(variant), name, calib_frames

    def before_test(self, runner) -> None:
        from bevlm.inference.variants import apply_variant, variant_inputs

        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        model.eval()
        calib, train_qa = variant_inputs(model, runner.cfg, [self.variant], self.calib_frames)
        apply_variant(model, self.variant, calib, log=runner.logger.info, train_qa=train_qa)
        runner.logger.info(f"inference variant {self.name!r} applied: {self.variant}")

"""Quantise the Linear layers of a model in place: RTN / GPTQ int4 or int8 dynamic.

GPTQ (Frantar et al., 2022, arXiv 2210.17323) needs calibration inputs: the
caller's ``calib_fn(module)`` runs ordinary forward passes (e.g. a few frames'
prefill + answers) while forward pre-hooks accumulate each layer's Hessian.
With ``sequential=True`` (default) the layers are processed block by block
(a block = the Linears under one numbered module such as ``model.layers.3``):
block i is calibrated with inputs produced by the already-quantised blocks
0..i-1, as in the paper, at the cost of one ``calib_fn`` run per block.
``sequential=False`` calibrates every layer in one run on float inputs.
Within a block all Linears see the block's float-path inputs.
"""
from __future__ import annotations

import re
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch import nn

from bevlm.models.llm.architectures import linear_names

from .allocation import allocate_group_sizes
from .awq import awq_scales, output_error
from .gptq import HessianAccumulator, gptq_quantize
from .int4 import check_group_size, dequantize, quantize_rtn
from .int8_dynamic import int8_dynamic_bytes, is_int8_dynamic_linear, quantize_int8_dynamic_
from .quant_embedding import QuantEmbedding4, is_tied
from .quant_embedding8 import QuantEmbedding8
from .quant_linear import QuantLinear4
from .rotation import rotate_residual_
from .settings import DEFAULT_INCLUDE, METHODS, GPTQSettings, Int8DynamicSettings, QuantSettings, quant_settings

__all__ = ["DEFAULT_INCLUDE", "METHODS", "QuantReport", "cast_lora_", "default_include", "merge_lora_",
           "module_bytes", "quantize_model", "select_linears"]


@dataclass
class QuantReport:
    """What :func:`quantize_model` did.

    Attributes:
        method: ``'rtn' | 'gptq' | 'int8_dynamic'``.
        bits: weight bits (8 for ``int8_dynamic``).
        group_size: columns per group (0 for ``int8_dynamic``: per channel).
        kernel: requested int4 kernel (``'-'`` for ``int8_dynamic``).
        layers: dotted names of the replaced Linears (and embedding / LM head with
            ``embeddings=True``).
        linear_bytes_before: bytes of those layers' weights + biases as they were (a tied
            embedding / LM head pair counted once).
        linear_bytes_fp16: the same tensors counted at 2 bytes per element.
        linear_bytes_after: bytes of the quantised replacements.
        module_bytes_before / module_bytes_after: all unique parameters and
            buffers of the module (tied tensors once, int8 packed weights included).
        seconds: wall time of the quantisation (calibration included).
        calib_runs: number of ``calib_fn`` calls (GPTQ).
        awq: per Linear scaled by AWQ (``awq_grid``): the chosen ``alpha`` and the output error on
            the calibration Hessian without (``error_plain``) and with (``error``) the scale.
        groups: with ``group_budget``: the group size chosen for each Linear.
        sensitivity: with ``group_budget``: per Linear, the score of its quantisation at each
            candidate group size: relative output error (``sensitivity='output'``) or
            Fisher-weighted output error (``'fisher'``) (:mod:`.allocation`).
        group_budget: the budget in stored bits per weight (``None``: group sizes from the settings).
        precise_rows: with ``table_rows``: the table rows kept in int8 as well.
    """

    method: str
    bits: int
    group_size: int
    kernel: str
    layers: list[str] = field(default_factory=list)
    linear_bytes_before: int = 0
    linear_bytes_fp16: int = 0
    linear_bytes_after: int = 0
    module_bytes_before: int = 0
    module_bytes_after: int = 0
    seconds: float = 0.0
    calib_runs: int = 0
    awq: dict = field(default_factory=dict)
    precise_rows: int = 0
    groups: dict = field(default_factory=dict)
    sensitivity: dict = field(default_factory=dict)
    group_budget: float | None = None

    @property
    def ratio_vs_fp16(self) -> float:
        """Bytes of the quantised Linears over their fp16 bytes."""
        return self.linear_bytes_after / max(self.linear_bytes_fp16, 1)

    def as_dict(self) -> dict:
        """Plain dict (JSON-able), with ``ratio_vs_fp16`` and the layer count."""
        out = asdict(self)
        out.update(ratio_vs_fp16=self.ratio_vs_fp16, num_layers=len(self.layers))
        return out

    def table(self) -> str:
        """A short human-readable summary."""
        mb = 1e6
        lines = []
        if self.groups:
            counts = {g: list(self.groups.values()).count(g) for g in sorted(set(self.groups.values()))}
            lines = [f"  group sizes chosen   : {', '.join(f'{g}: {n} layers' for g, n in counts.items())} "
                     f"(budget {self.group_budget:.3f} bits per weight)"]
            kinds: dict[str, list[int]] = {}
            for name, g in self.groups.items():
                kinds.setdefault(name.removesuffix(".base_layer").rsplit(".", 1)[-1], []).append(g)
            for kind, sizes in kinds.items():
                lines.append(f"    {kind:<18} : " + ", ".join(f"{g}: {sizes.count(g)}" for g in sorted(set(sizes)))
                             + "  (by layer: " + " ".join(str(g) for g in sizes) + ")")
        return "\n".join([
            f"quantisation: {self.method}, {self.bits} bit, group {self.group_size}, kernel {self.kernel}",
            f"  layers replaced      : {len(self.layers)}",
            f"  linears before       : {self.linear_bytes_before / mb:9.2f} MB "
            f"(fp16: {self.linear_bytes_fp16 / mb:.2f} MB)",
            f"  linears after        : {self.linear_bytes_after / mb:9.2f} MB ({self.ratio_vs_fp16:.3f}x fp16)",
            f"  whole module         : {self.module_bytes_before / mb:9.2f} MB -> {self.module_bytes_after / mb:.2f} MB",
            f"  time                 : {self.seconds:9.2f} s ({self.calib_runs} calibration runs)"] + lines
            + ([f"  table rows in int8   : {self.precise_rows}"] if self.precise_rows else []))


def _tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def module_bytes(module: nn.Module) -> int:
    """Bytes of all unique parameters and buffers (tied tensors counted once),
    plus the packed weights of int8 dynamic Linears."""
    seen: set[tuple] = set()
    total = 0
    for t in list(module.parameters()) + list(module.buffers()):
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if key not in seen:
            seen.add(key)
            total += _tensor_bytes(t)
    total += sum(int8_dynamic_bytes(m) for m in module.modules() if is_int8_dynamic_linear(m))
    return total


def _linear_bytes(layer: nn.Linear) -> tuple[int, int]:
    """(bytes as stored, bytes at fp16) of a Linear's weight and bias."""
    tensors = [layer.weight] + ([layer.bias] if layer.bias is not None else [])
    return sum(_tensor_bytes(t) for t in tensors), sum(2 * t.numel() for t in tensors)


def select_linears(module: nn.Module, include: tuple[str, ...] | None, exclude: tuple[str, ...],
                   keep_lora: bool = False) -> list[str]:
    """Names of ``nn.Linear`` submodules whose last name part is in ``include``
    and none of whose name parts is in ``exclude``, in module order.

    Args:
        module: the model.
        include: last name parts of the Linears to select; ``None``: the decoder-layer Linears of
            the model's architecture (:func:`default_include`).
        exclude: name parts that exclude a Linear.
        keep_lora: a peft LoRA layer is an error unless ``keep_lora``: then its ``base_layer`` is
            selected (``'...q_proj.base_layer'``) and the adapters are left as they are.

    Returns:
        the dotted names.
    """
    if include is None:
        include = default_include(module)
    names = []
    for name, sub in module.named_modules():
        parts = name.split(".")
        wanted = parts[-1] in include and not set(parts) & set(exclude)
        if hasattr(sub, "lora_A"):
            if not keep_lora:
                raise ValueError(f"quantize_model: {name} is a LoRA layer; merge the adapters first with "
                                 "bevlm.inference.quantization.merge_lora_(hf_causal_lm), or quantise only the "
                                 "base layers with keep_lora=True in the quant settings")
            if wanted and type(getattr(sub, "base_layer", None)) is nn.Linear:
                names.append(f"{name}.base_layer")
            continue
        if type(sub) is nn.Linear and wanted:
            names.append(name)
    if not names:
        arch = _model_type(module)
        hint = (f"; this is a {arch!r} model, whose decoder Linears are include={linear_names(arch)} "
                "(bevlm.models.llm.architectures.linear_names)" if arch else "")
        raise ValueError(f"quantize_model: no nn.Linear matches include={include} / exclude={exclude}; "
                         f"check the layer names (module.named_modules()){hint}")
    return names


def default_include(module: nn.Module) -> tuple[str, ...]:
    """What ``include=None`` selects in ``module`` (a ``*ForCausalLM``, an ``HFCausalLM`` or a model
    holding one as ``llm``): every decoder-layer Linear of its architecture
    (:func:`bevlm.models.llm.architectures.linear_names`; the Llama names, :data:`DEFAULT_INCLUDE`, for
    a module without a known ``model_type``)."""
    return tuple(linear_names(_model_type(module)))


def _model_type(module: nn.Module) -> str:
    """``model_type`` of a ``*ForCausalLM``, of the ``lm`` of an ``HFCausalLM`` or of the ``llm.lm`` of a
    model holding one ('' if none)."""
    llm = getattr(module, "llm", None)
    for candidate in (module, getattr(module, "lm", None), getattr(llm, "lm", None)):
        config = getattr(candidate, "config", None)
        if getattr(config, "model_type", None):
            return str(config.model_type)
    return ""


def _block_of(name: str) -> str:
    """``'model.layers.3.mlp.up_proj' -> 'model.layers.3'``: prefix up to the last numeric part."""
    parts = name.split(".")
    numeric = [i for i, p in enumerate(parts) if re.fullmatch(r"\d+", p)]
    return ".".join(parts[:numeric[-1] + 1]) if numeric else name


def _replace(module: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(module.get_submodule(parent_name) if parent_name else module, child, new)


def _calibrate(module: nn.Module, names: list[str], calib_fn: Callable[[nn.Module], None]) -> dict:
    """Run ``calib_fn`` once with Hessian hooks on ``names``; returns name -> accumulator."""
    accumulators, handles = {}, []
    for name in names:
        layer = module.get_submodule(name)
        accumulators[name] = HessianAccumulator(layer.in_features)
        handles.append(accumulators[name].attach(layer))
    try:
        with torch.no_grad():
            calib_fn(module)
    finally:
        for handle in handles:
            handle.remove()
    missing = [n for n, acc in accumulators.items() if acc.num_rows == 0]
    if missing:
        raise RuntimeError(f"quantize_model(method='gptq'): calib_fn never ran {missing[:3]} "
                           f"({len(missing)} layers); make it call forward passes of the module it receives")
    return accumulators


def quantize_model(module: nn.Module, settings: QuantSettings | dict,
                   calib_fn: Callable[[nn.Module], None] | None = None,
                   loss_fn: Callable[[nn.Module], None] | None = None) -> QuantReport:
    """Replace selected ``nn.Linear`` layers of ``module`` by quantised ones, in place.

    Args:
        module: the model (e.g. ``HFCausalLM`` or its ``lm``); LoRA adapters must be merged first
            (:func:`merge_lora_`) unless ``settings.keep_lora``: then the base layers are quantised,
            every adapter stays as it is (unmerged, still switchable; cast to
            ``settings.lora_dtype`` first), QLoRA-style.
        settings: :class:`~.settings.RTNSettings`, :class:`~.settings.GPTQSettings` or
            :class:`~.settings.Int8DynamicSettings`, or their dict form (see
            :func:`~.settings.quant_settings`). ``include=None`` (the default) selects every
            decoder-layer Linear of the module's architecture (:func:`default_include`). Every
            selected Linear's group size
            (``group_size`` / ``group_sizes``) must divide its ``in_features`` and every
            ``group_sizes`` key must name a selected layer; both are checked before any layer is
            replaced. With ``embeddings`` the input embedding table is stored in int4
            (:class:`QuantEmbedding4`) or int8 (:class:`QuantEmbedding8`, round to nearest) at
            ``embed_group_size`` and so is the LM head: a head tied to the embedding shares the
            table's codes (stored once); with GPTQ the head is quantised on its input Hessian (a
            tied int4 table takes the head's codes, an untied one RTN). ``module`` must then have
            ``get_input_embeddings`` (or an ``lm`` that has).
        calib_fn: ``calib_fn(module)`` runs forward passes on calibration data (GPTQ only; with
            ``sequential`` it runs once per block, a block being the Linears under one numbered
            module such as ``model.layers.3``; with ``group_budget`` once more first, on the float
            model, to measure each Linear's sensitivity and choose its group size).
        loss_fn: with ``group_budget`` and ``sensitivity='fisher'``: ``loss_fn(module)`` runs the
            calibration forwards with autograd on and calls ``backward()`` on each loss (e.g. the
            cross-entropy of reference answers); the gradients reaching each Linear's output weight
            its output error (:mod:`.allocation`). Parameter gradients are switched off meanwhile, so
            the inputs must require grad (e.g. prefix embeddings with ``requires_grad_()``).

    Returns:
        :class:`QuantReport`.
    """
    settings = quant_settings(settings)
    method = settings.method
    is_gptq = isinstance(settings, GPTQSettings)
    is_int8 = isinstance(settings, Int8DynamicSettings)
    if is_gptq and calib_fn is None:
        raise ValueError("quantize_model(method='gptq') needs calib_fn(module) running calibration forwards")
    if not is_gptq and calib_fn is not None:
        raise ValueError(f"quantize_model(method={method!r}): calib_fn is only used by method='gptq'; drop it")
    fisher = is_gptq and settings.group_budget is not None and settings.sensitivity == "fisher"
    if is_gptq and settings.table_rows:
        lm = _embedding_owner(module)
        if lm is None or not is_tied(lm.get_input_embeddings(), lm.get_output_embeddings()):
            raise ValueError(f"quantize_model(table_rows={settings.table_rows}): the precise rows serve the table and "
                             "its tied LM head; this model's head is not tied to its input embedding (drop table_rows)")
    if fisher and loss_fn is None:
        raise ValueError("quantize_model(group_budget=..., sensitivity='fisher') needs loss_fn(module), which runs "
                         "the calibration forwards with autograd and calls backward() on each loss")
    if loss_fn is not None and not fisher:
        raise ValueError("quantize_model: loss_fn is only used with group_budget and sensitivity='fisher'; drop it")
    start = time.perf_counter()
    bytes_before = module_bytes(module)
    names = select_linears(module, settings.include, settings.exclude, settings.keep_lora)
    if not is_int8:  # fail before the model is changed and before any (minutes-long) GPTQ work
        _check_group_sizes(module, names, settings)
        if settings.rotation is not None:  # the same function, outlier channels spread; an MLP rotation
            rotate_residual_(module, settings.rotation, settings.rotation_seed, mlp=settings.rotation_mlp)
            names = select_linears(module, settings.include, settings.exclude, settings.keep_lora)  # renames down_proj
    if settings.keep_lora:
        cast_lora_(module, settings.lora_dtype)
    report = QuantReport(method=method, bits=8 if is_int8 else settings.bits,
                         group_size=0 if is_int8 else settings.group_size,
                         kernel="-" if is_int8 else settings.kernel, layers=list(names))
    report.module_bytes_before = bytes_before
    for name in names:
        stored, fp16 = _linear_bytes(module.get_submodule(name))
        report.linear_bytes_before += stored
        report.linear_bytes_fp16 += fp16

    if is_int8:
        quantize_int8_dynamic_(module, names, per_channel=settings.per_channel)
        report.linear_bytes_after = sum(int8_dynamic_bytes(module.get_submodule(n)) for n in names)
    else:
        s = settings
        was_training = module.training
        module.eval()
        if not is_gptq:
            for name in names:
                _replace(module, name, QuantLinear4.from_linear(module.get_submodule(name), s.group_size_of(name),
                                                                s.kernel, s.clip_search, s.zero_point))
        else:
            group_of = s.group_size_of
            if s.group_budget is not None:
                report.groups, report.sensitivity = _choose_group_sizes(module, names, calib_fn, s, loss_fn)
                report.group_budget = s.group_budget
                report.calib_runs += 2 if loss_fn is not None else 1
                group_of = report.groups.__getitem__
            blocks: dict[str, list[str]] = {}
            for name in names:
                blocks.setdefault(_block_of(name) if s.sequential else "all", []).append(name)
            for block_names in blocks.values():
                accumulators = _calibrate(module, block_names, calib_fn)
                report.calib_runs += 1
                for name in block_names:
                    layer, size = module.get_submodule(name), group_of(name)
                    q, scales, zeros, input_scale, awq = _gptq_layer(layer.weight, accumulators.pop(name).hessian,
                                                                     size, s)
                    if awq is not None:
                        report.awq[name] = awq
                    _replace(module, name, QuantLinear4.from_codes(q.to(layer.weight.device), scales, zeros,
                                                                   layer.bias, size, s.kernel, method="gptq",
                                                                   zero_point=s.zero_point, input_scale=input_scale))
        module.train(was_training)
        report.linear_bytes_after = sum(module.get_submodule(n).weight_bytes() for n in names)
        if s.embeddings:
            _quantize_embeddings(module, s, report, calib_fn if is_gptq else None)
    report.module_bytes_after = module_bytes(module)
    report.seconds = time.perf_counter() - start
    return report


def _gptq_layer(weight: torch.Tensor, hessian: torch.Tensor, size: int, s: GPTQSettings) -> tuple:
    """GPTQ codes of one Linear at group ``size`` (after AWQ scaling with ``s.awq_grid``):
    ``(q, scales, zeros, input_scale or None, awq record or None)``."""
    input_scale, awq = None, None
    if s.awq_grid:  # quantise W diag(s) on the Hessian of the inputs divided by s
        scale, alpha, errors = awq_scales(weight, hessian, size, s.awq_grid, s.zero_point, s.clip_search)
        awq = dict(alpha=alpha, **errors)
        scale = scale.to(weight.device)
        weight = weight.detach().float() * scale
        hessian = hessian / scale.to(hessian.device)[:, None] / scale.to(hessian.device)[None, :]
        input_scale = 1.0 / scale
    q, scales, zeros = gptq_quantize(weight, hessian, s.bits, size, damping=s.damping, act_order=s.act_order,
                                     clip_search=s.clip_search, zero_point=s.zero_point)
    return q, scales, zeros, input_scale, awq


def _group_candidates(in_features: int, choices: tuple[int, ...]) -> list[int]:
    """The ``choices`` that divide ``in_features`` (and keep whole bytes of codes), finest first."""
    return sorted(g for g in choices if in_features % g == 0 and g % 2 == 0)


def _output_fisher(module: nn.Module, names: list[str], loss_fn: Callable[[nn.Module], None]) -> dict:
    """Per Linear, the summed squared gradient of ``loss_fn``'s losses at each output channel
    (``[out]``, over every row of every calibration forward); parameter gradients off meanwhile."""
    sums = {name: torch.zeros(module.get_submodule(name).out_features, dtype=torch.float64) for name in names}

    def hook(name):
        def on_grad(g: torch.Tensor) -> None:  # returns None: the gradient flows on unchanged
            sums[name].add_(g.detach().double().pow(2).reshape(-1, g.shape[-1]).sum(0).to(sums[name].device))

        def on_output(_layer, _inputs, output):
            if output.requires_grad:
                output.register_hook(on_grad)
        return on_output

    handles = [module.get_submodule(name).register_forward_hook(hook(name)) for name in names]
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            loss_fn(module)
    finally:
        for handle in handles:
            handle.remove()
        for p in params:
            p.requires_grad_(True)
    silent = [n for n, v in sums.items() if not bool(v.any())]
    if len(silent) == len(names):
        raise RuntimeError("quantize_model(sensitivity='fisher'): no gradient reached any quantised layer; loss_fn "
                           "must run forwards with inputs that require grad and call backward() on the loss")
    return sums


def _choose_group_sizes(module: nn.Module, names: list[str], calib_fn: Callable[[nn.Module], None],
                        s: GPTQSettings, loss_fn: Callable[[nn.Module], None] | None = None) -> tuple[dict, dict]:
    """Sensitivity of every Linear at every candidate group size, and the allocation under
    ``s.group_budget`` (:mod:`.allocation`).

    One calibration run on the float model gives every layer's input Hessian ``H``; each layer is
    quantised as the real pass will (AWQ + GPTQ at each candidate) and scored by its relative output
    error ``trace(dW H dW^T) / trace(W H W^T)`` (``sensitivity='output'``) or, with ``loss_fn``
    (``'fisher'``), by ``sum_o F_o (dW H dW^T)_oo`` with ``F_o`` the summed squared loss gradient at
    output channel ``o`` (a second-order estimate of the loss increase, comparable across layers).
    The real pass then quantises block by block (``sequential``) with the chosen sizes.
    """
    fisher = _output_fisher(module, names, loss_fn) if loss_fn is not None else None
    accumulators = _calibrate(module, names, calib_fn)
    errors, numels = {}, {}
    for name in names:
        layer = module.get_submodule(name)
        hessian = accumulators.pop(name).hessian
        weight = layer.weight.detach().float()
        energy = max(output_error(torch.zeros_like(weight), weight, hessian), 1e-30)
        errors[name] = {}
        for size in _group_candidates(layer.in_features, s.group_choices):
            q, scales, zeros, input_scale, _ = _gptq_layer(weight, hessian, size, s)
            w_hat = dequantize(q, scales, zeros, size, torch.float32, s.zero_point).to(weight.device)
            if input_scale is not None:
                w_hat = w_hat * input_scale.to(w_hat)
            if fisher is None:
                errors[name][size] = output_error(weight, w_hat, hessian) / energy
            else:
                d = (w_hat - weight).double()
                per_channel = ((d @ hessian.double().to(d.device)) * d).sum(1)  # [out] (dW H dW^T)_oo
                errors[name][size] = float((per_channel.cpu() * fisher[name]).sum())
        numels[name] = weight.numel()
    return allocate_group_sizes(errors, numels, s.group_budget), errors


def _check_group_sizes(module: nn.Module, names: list[str], settings: QuantSettings) -> None:
    """Every selected Linear's group size divides its ``in_features``, every ``group_sizes`` key names
    at least one selected layer, and (with ``embeddings``) the table width is a multiple of the
    table's group size."""
    unused = [part for part, _ in settings.group_sizes if not any(part in n.split(".") for n in names)]
    if unused:
        raise ValueError(f"quantize_model: group_sizes keys {unused} match none of the {len(names)} selected "
                         f"layers (e.g. {names[0]}); keys are dotted-name parts such as 'gate_proj'")
    budget = getattr(settings, "group_budget", None)
    for name in names:
        width = module.get_submodule(name).in_features
        if budget is None:
            check_group_size(width, settings.group_size_of(name), f"quantize_model: {name}")
        elif not _group_candidates(width, settings.group_choices):
            raise ValueError(f"quantize_model: none of group_choices={settings.group_choices} divides the input "
                             f"width {width} of {name}; add a group size that does")
    if settings.embeddings:
        lm = _embedding_owner(module)
        width = getattr(lm.get_input_embeddings(), "embedding_dim", None) if lm is not None else None
        if width is not None:
            check_group_size(width, settings.table_group_size,
                             "quantize_model: the embedding table (embed_group_size, default group_size)")


def _embedding_owner(module: nn.Module) -> nn.Module | None:
    """``module`` or its ``lm`` (an ``HFCausalLM`` wrapper), whichever has ``get_input_embeddings``."""
    lm = module if hasattr(module, "get_input_embeddings") else getattr(module, "lm", None)
    return lm if lm is not None and hasattr(lm, "get_input_embeddings") else None


def _quantize_embeddings(module: nn.Module, settings: QuantSettings, report: QuantReport,
                         calib_fn: Callable[[nn.Module], None] | None = None) -> None:
    """Replace the input embedding (and the LM head) of ``module`` by quantised ones (int4 or int8 as
    ``settings.embeddings`` says, at ``settings.table_group_size``); update ``report``.

    With ``calib_fn`` (GPTQ settings) an int4 LM head is quantised by GPTQ on the Hessian of its
    inputs (the final hidden states of the calibration run, after the already quantised blocks); a
    tied table takes the head's codes, an untied table is quantised by RTN.
    """
    group_size, kernel, clip_search = settings.table_group_size, settings.kernel, settings.clip_search
    zero_point = settings.zero_point
    table_bits = 8 if settings.embeddings == "int8" else 4
    lm = _embedding_owner(module)
    if lm is None:
        raise ValueError(f"quantize_model(embeddings={settings.embeddings!r}): {type(module).__name__} has no "
                         "get_input_embeddings(); "
                         "pass the HF model (or the HFCausalLM wrapper)")
    emb, head = lm.get_input_embeddings(), lm.get_output_embeddings()
    if type(emb) is not nn.Embedding:
        raise ValueError(f"quantize_model(embeddings={settings.embeddings!r}): the input embedding is "
                         f"{type(emb).__name__}, "
                         "not nn.Embedding (already quantised?)")
    names = {id(m): n for n, m in module.named_modules()}
    tied = is_tied(emb, head)
    head_codes = None
    if table_bits == 8:
        calib_fn = None  # an int8 table is rounded to nearest (0.4 % of its range per step)
    rows_wanted = getattr(settings, "table_rows", 0) if table_bits == 4 else 0
    counts = torch.zeros(emb.num_embeddings, dtype=torch.int64)

    def count_ids(_emb, args):  # the token ids the calibration text embeds (prompt, questions, answers)
        ids = args[0].reshape(-1).to("cpu", torch.int64)
        counts.index_add_(0, ids, torch.ones_like(ids))

    if calib_fn is not None and type(head) is nn.Linear:
        head_name = names[id(head)]
        handle = emb.register_forward_pre_hook(count_ids) if rows_wanted else None
        try:
            hessian = _calibrate(module, [head_name], calib_fn)[head_name].hessian
        finally:
            if handle is not None:
                handle.remove()
        report.calib_runs += 1
        head_codes = gptq_quantize(head.weight, hessian, 4, group_size, damping=settings.damping,
                                   act_order=settings.act_order, clip_search=clip_search, zero_point=zero_point)
    if table_bits == 8:
        qemb = QuantEmbedding8.from_embedding(emb, group_size)
    elif tied and head_codes is not None:
        seen = counts.nonzero().reshape(-1)
        keep = seen[counts[seen].argsort(descending=True, stable=True)][:rows_wanted] if rows_wanted else seen[:0]
        qemb = QuantEmbedding4.from_codes(*head_codes, group_size, emb.weight.dtype, method="gptq",
                                          zero_point=zero_point, precise_rows=int(keep.numel()))
        if keep.numel():
            qemb.set_precise_rows(keep.to(emb.weight.device), emb.weight.detach()[keep.to(emb.weight.device)])
        report.precise_rows = int(keep.numel())
    else:
        qemb = QuantEmbedding4.from_embedding(emb, group_size, clip_search, zero_point)
    report.linear_bytes_before += _tensor_bytes(emb.weight)
    report.linear_bytes_fp16 += 2 * emb.weight.numel()
    report.linear_bytes_after += qemb.weight_bytes()
    _replace(module, names[id(emb)], qemb)
    report.layers.append(names[id(emb)])
    if tied:  # one table: the head reads the embedding's codes
        _replace(module, names[id(head)], qemb.tied_head(kernel))
        report.layers.append(names[id(head)])
    elif type(head) is nn.Linear:
        stored, fp16 = _linear_bytes(head)
        qhead = (QuantLinear4.from_codes(*(c.to(head.weight.device) for c in head_codes), head.bias, group_size,
                                         kernel, method="gptq", zero_point=zero_point) if head_codes is not None
                 else QuantLinear4.from_linear(head, group_size, kernel, clip_search, zero_point))
        report.linear_bytes_before += stored
        report.linear_bytes_fp16 += fp16
        report.linear_bytes_after += qhead.weight_bytes()
        _replace(module, names[id(head)], qhead)
        report.layers.append(names[id(head)])


def cast_lora_(module: nn.Module, dtype: str | None) -> None:
    """Cast every LoRA adapter parameter of ``module`` to ``dtype`` in place.

    Args:
        module: a model holding peft LoRA layers (parameters named ``...lora_A...`` /
            ``...lora_B...``); a model without adapters is left as it is.
        dtype: a torch dtype name such as ``'bfloat16'``; ``None`` keeps the adapters as they are.
    """
    if dtype is None:
        return
    for name, param in module.named_parameters():
        if ".lora_" in name:
            param.data = param.data.to(getattr(torch, dtype))


def merge_lora_(hf_causal_lm: nn.Module, adapter: str | None = None) -> nn.Module:
    """Merge the LoRA adapter into the base weights of an ``HFCausalLM``, in place.

    Uses peft's ``merge_and_unload``: ``W <- W + (alpha / r) B A`` for the
    active adapter; other adapters are dropped. Afterwards the wrapper holds
    the plain ``*ForCausalLM`` (``adapter_names == []``), so quantisation sees
    ordinary ``nn.Linear`` layers and no LoRA branch remains.

    Args:
        hf_causal_lm: a :class:`bevlm.models.llm.HFCausalLM` (no-op without LoRA).
        adapter: adapter to merge (default: the active one).

    Returns:
        ``hf_causal_lm``.
    """
    if not getattr(hf_causal_lm, "adapter_names", None):
        return hf_causal_lm
    if adapter is not None:
        hf_causal_lm.set_adapter(adapter)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        merged = hf_causal_lm.model.merge_and_unload()
    hf_causal_lm.model = merged
    hf_causal_lm.adapter_names = []
    return hf_causal_lm

"""Inference variants: one trained model, several efficient-inference settings, side by side.

A variant is a dict of switches, every one optional (missing = the model's own setting)::

    dict(
        # overrides of the model's test_cfg (bevlm.models.detectors.test_cfg.TestConfig),
        # applied through BEVVLM.set_test_cfg; any test_cfg key may appear, e.g.
        pruning=dict(encoder_layers=1, bev_keep_ratio=0.5, fastv_keep_ratio=0.5, fastv_layer=2),
        speculative=dict(draft_len=4, use_ngram=True, use_layer_skip=True, max_skip=12,
                         skip_layers=None,       # None = search on calibration frames
                         search=dict(sample_per_round=6),  # arguments of search_skip_layers
                         datastore=dict(max_ngram=4, min_ngram=2, min_share=0.3)),
                                                  # REST-style drafts from the training answers;
                                                  # quant_draft=dict(precision="int4") would draft
                                                  # with an int4 copy of the same weights instead
                                                  # of layer skipping (no skip-set search)
        batch_questions=True,                     # decode a frame's questions as one batch
        share_prompt_cache=True,                  # prompt-text KV computed once, reused per frame
        repetition_stop=None,                     # loop stop rule (dict of RepetitionStop) or None: off
        stream_temporal=True,
        # the QA format (the model's qa_policy, also its training format): BEVVLM.set_qa_policy
        qa_policy=dict(mode="three_rounds"),
        # weight transformations, applied in this order after the test_cfg overrides
        quant=dict(method="rtn" | "gptq" | "int8_dynamic", bits=4, group_size=64, kernel="auto"),
        llm_dtype="bfloat16",                     # run the LLM in this dtype (vision stays fp32)
    )

The ``speculative`` switch may ask for calibrated pieces (``skip_layers=None`` with layer
skipping: a skip-set search on calibration frames; ``datastore``: an n-gram table of the
training answers); :func:`apply_variant` resolves them into plain
:class:`~bevlm.inference.speculative.SelfSpeculativeDecoder` arguments before they reach the
model's ``test_cfg.speculative``.
"""
from __future__ import annotations

import copy

import torch
from mmengine.dataset import pseudo_collate
from torch import nn

from bevlm.models.detectors.test_cfg import TestConfig
from bevlm.models.llm.prompt import encode
from bevlm.models.qa import blocks_for_policy
from bevlm.models.qa.closed_set import closed_set_answers
from bevlm.registry import DATASETS

from .ptq import calibration_prefixes, quantize_bevvlm
from .quantization import QuantLinear4
from .quantization import kernels as quant_kernels
from .quantization.quant_embedding import QuantEmbedding4
from .quantization.quant_embedding8 import QuantEmbedding8, TiedInt8Head
from .speculative import NgramDatastore, search_skip_layers
from .speculative.ngram import question_key

#: Variant switches that are not ``test_cfg`` overrides.
TRANSFORM_KEYS = ("qa_policy", "quant", "llm_dtype")
#: Every valid variant key: the ``test_cfg`` keys and :data:`TRANSFORM_KEYS`.
VARIANT_KEYS = TestConfig.keys() + TRANSFORM_KEYS


def check_variant(spec: dict, name: str = "variant") -> None:
    """Raise on keys that are neither ``test_cfg`` keys nor variant transformations.

    Args:
        spec: the variant.
        name: its name, for the message.

    Raises:
        KeyError: unknown keys, with the allowed ones.
    """
    unknown = set(spec) - set(VARIANT_KEYS)
    if unknown:
        raise KeyError(f"{name}: unknown variant keys {sorted(unknown)}; allowed: {VARIANT_KEYS}")


def build_variant(base: nn.Module, spec: dict, calib: list | None = None, log=print,
                  train_qa: list | None = None, prior: list | None = None) -> nn.Module:
    """A deep copy of ``base`` with the variant's switches applied (``base`` is untouched).

    Args: as :func:`apply_variant`.
    """
    model = copy.deepcopy(base).eval()
    model.reset_test_state()
    return apply_variant(model, spec, calib, log=log, train_qa=train_qa, prior=prior)


def calibrates_mc(model: nn.Module, spec: dict) -> bool:
    """Whether ``model`` tested as ``spec`` scores multiple choice or closed-set families against a
    content-free frame."""
    return model.test_cfg.merged({k: v for k, v in spec.items() if k in ("multiple_choice", "closed_set")}).calibrated


def closes_families(model: nn.Module, spec: dict) -> bool:
    """Whether ``model`` tested as ``spec`` answers some families from their training answers
    (``test_cfg.closed_set``), which needs the training QA."""
    return spec.get("closed_set", model.test_cfg.closed_set) is not None


def prior_inputs(model: nn.Module, cfg, specs: list[dict], frames: int = 16) -> list | None:
    """Training frames whose mean prefix is the content-free frame of calibrated multiple choice
    (``CalibFrame`` s, evenly spaced over each training set so that many scenes are averaged);
    None when no variant calibrates."""
    if not any(calibrates_mc(model, spec) for spec in specs):
        return None
    sets = training_frame_datasets(cfg)
    per_set = max(1, -(-frames // len(sets)))
    picks = [(ds, sorted({round(j * (len(ds) - 1) / max(1, per_set - 1)) for j in range(min(per_set, len(ds)))}))
             for ds in sets]
    return calibration_prefixes(model, [pseudo_collate([ds[i]]) for ds, idx in picks for i in idx], max_questions=0)


def mc_prior_prefix(frames: list) -> torch.Tensor:
    """The content-free frame: the mean ``[1, P, D]`` prefix of ``frames`` (``CalibFrame`` s).

    Raises:
        ValueError: no frames, or prefixes of different lengths (a prefix layout that varies per
            frame has no position-wise mean).
    """
    if not frames:
        raise ValueError("mc_prior_prefix: no training frames to average (the training split is empty?)")
    shapes = {tuple(f.prefix.shape) for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"mc_prior_prefix: training prefixes differ in shape {sorted(shapes)}; calibrated multiple "
                         "choice needs one prefix layout. Fix: use test_cfg.multiple_choice='likelihood'")
    return torch.cat([f.prefix.float() for f in frames]).mean(0, keepdim=True).to(frames[0].prefix.dtype)


def needs_inputs(specs: list[dict]) -> tuple[bool, bool]:
    """``(calibration frames, training QA)``: what building these variants needs."""
    def searches_skip(sp):  # a layer-skip drafter without a given skip set searches one on calibration
        return (bool(sp) and sp.get("use_layer_skip", True) and sp.get("skip_layers") is None
                and sp.get("quant_draft") is None)

    calib = any((v.get("quant") or {}).get("method") == "gptq" or searches_skip(v.get("speculative"))
                for v in specs)
    qa = any((v.get("speculative") or {}).get("datastore") is not None for v in specs)
    return calib, qa


def variant_inputs(model: nn.Module, cfg, specs: list[dict], calib_frames: int = 4) -> tuple:
    """``(calib, train_qa)`` for :func:`apply_variant`, both from the config's *training* split
    (calibration and the answer datastore never see the evaluated frames); ``None`` where unneeded."""
    need_calib, need_qa = needs_inputs(specs)
    need_qa = need_qa or any(closes_families(model, spec) for spec in specs)
    if not (need_calib or need_qa):
        return None, None
    sets = training_frame_datasets(cfg)
    calib = None
    if need_calib:  # the first frames of each training set (every domain of a union)
        per_set = max(1, -(-calib_frames // len(sets)))
        calib = calibration_prefixes(model, [pseudo_collate([ds[i]]) for ds in sets
                                             for i in range(min(per_set, len(ds)))])
    train_qa = [entry["qa"] for ds in sets for entry in ds.data_list] if need_qa else None  # QA only, no images
    return calib, train_qa


def training_frame_datasets(cfg) -> list:
    """The config's training dataset(s) rebuilt frame by frame (``qa_mode='frame'``, no history):
    one per member of a ``ConcatDataset`` (e.g. the domains of a multi-domain union)."""
    tr = cfg.train_dataloader.dataset
    tr = tr.to_dict() if hasattr(tr, "to_dict") else dict(tr)
    members = tr["datasets"] if tr.get("type") == "ConcatDataset" else [tr]
    out = []
    for member in members:
        member = dict(member, qa_mode="frame", queue_length=1, max_frames=None)
        out.append(DATASETS.build(member))
    return out


def apply_variant(model: nn.Module, spec: dict, calib: list | None = None, log=print,
                  train_qa: list | None = None, prior: list | None = None) -> nn.Module:
    """Apply the variant's switches to ``model`` in place and return it.

    The ``test_cfg`` keys go through :meth:`BEVVLM.set_test_cfg` (the only way a built model's
    test-time behaviour changes), ``qa_policy`` through :meth:`BEVVLM.set_qa_policy`; the weight
    transformations (``quant``, then ``llm_dtype``) follow; a ``speculative`` switch is resolved
    last (its skip-set search runs on the transformed LLM) and set as ``test_cfg.speculative``.
    The shared int4 / int8 dequantisation workspace is freed first, so what it holds afterwards
    (counted by :func:`llm_resident_bytes`) is this variant's.

    Args:
        model: a trained :class:`BEVVLM` in eval mode.
        spec: the variant (see the module docstring); unknown keys raise.
        calib: calibration frames (``CalibFrame`` s) from
            :func:`bevlm.inference.ptq.calibration_prefixes` (GPTQ, skip-layer search).
        log: message sink.
        train_qa: the training split's QA, one list of ``QAItem`` per frame; the corpus of
            the speculative ``datastore`` (answers formatted by the variant's QA policy).
        prior: training frames (:func:`prior_inputs`) whose mean prefix becomes the content-free
            frame when the model ends up with ``multiple_choice='calibrated'`` (set after the
            weight transformations, so the prior is scored by the weights that answer).

    Returns:
        ``model``.

    Raises:
        ValueError: calibrated multiple choice without ``prior`` frames.
    """
    quant_kernels.clear_workspace()
    check_variant(spec)
    model.eval()
    overrides = {k: v for k, v in spec.items() if k in TestConfig.keys() and k != "speculative"}
    model.set_test_cfg(overrides)
    if "qa_policy" in spec:
        model.set_qa_policy(spec["qa_policy"])
    if spec.get("quant"):
        report = quantize_bevvlm(model, calib=calib, **spec["quant"])
        log(report.table())
    if spec.get("llm_dtype"):  # after quantisation: calibration and int4 codes come from the fp32 weights
        cast_llm_(model.llm, spec["llm_dtype"])
    if "speculative" in spec:
        speculative = spec["speculative"]
        if speculative:
            speculative = resolve_speculative(model, speculative, calib, log=log, train_qa=train_qa)
        model.set_test_cfg(dict(speculative=speculative or None))
        quant_drafter = getattr(model.frame_decoder, "quant_drafter", None)
        if quant_drafter is not None:  # the low-precision draft is built here, not in the first frame
            quant_drafter.prepare()
            log(f"speculative: {quant_drafter.setting.precision} draft model, "
                f"{quant_drafter.resident_bytes / 1e6:.1f} MB beyond the verifier's weights")
    if model.test_cfg.closed_set is not None:
        cs = model.test_cfg.closed_set
        if not train_qa:
            raise ValueError("test_cfg.closed_set needs the training QA for its candidate answers: pass "
                             "train_qa=variant_inputs(model, cfg, [spec])[1] to apply_variant / build_variant")
        answers = closed_set_answers(train_qa, cs["families"], cs["min_count"], cs["max_answers"])
        model.set_closed_answers(answers)
        log("closed-set answers from the training QA: " + ", ".join(f"{f} {len(t)}" for f, t in answers.items()))
    else:
        model.set_closed_answers(None)
    if model.test_cfg.calibrated:
        if not prior:
            raise ValueError("calibrated scoring (multiple_choice / closed_set) needs training frames for its content-free frame: pass "
                             "prior=prior_inputs(model, cfg, [spec]) to apply_variant / build_variant")
        model.set_mc_prior(mc_prior_prefix(prior))
        log(f"calibrated scoring against the mean prefix of {len(prior)} training frames")
    else:
        model.set_mc_prior(None)
    return model


def resolve_speculative(model: nn.Module, spec: dict, calib: list | None, log=print,
                        train_qa: list | None = None) -> dict:
    """Turn a variant's ``speculative`` switch into :class:`SelfSpeculativeDecoder` arguments.

    ``skip_layers=None`` with layer skipping searches a skip set on the calibration frames
    (``max_skip``, ``search``: arguments of :func:`search_skip_layers`) unless ``quant_draft`` names
    the draft model; ``datastore`` (a dict of :func:`answer_datastore` options) builds the n-gram
    table of the training answers.

    Args:
        model: the variant's :class:`BEVVLM` (weights already transformed).
        spec: the ``speculative`` switch.
        calib: calibration frames (for the search).
        log: message sink.
        train_qa: training QA (for the datastore).

    Returns:
        The decoder arguments (``skip_layers`` a list, ``datastore`` an :class:`NgramDatastore`).
    """
    sp = dict(spec)
    skip = sp.pop("skip_layers", None)
    max_skip = sp.pop("max_skip", model.llm.num_layers // 2)
    search_cfg = sp.pop("search", None) or {}
    if skip is None and sp.get("use_layer_skip", True) and sp.get("quant_draft") is None:
        items = []
        for frame in calib or []:
            cache = model.llm.prefill(frame.prefix)
            items += [(cache, q) for q in frame.questions[:4]]
        result = search_skip_layers(model.llm, items, max_skip=max_skip, **search_cfg)
        skip = list(result.skip_layers)
        log(f"speculative: searched skip set {skip}")
        if not skip:  # no set pays off: a drafter skipping nothing is the full model
            sp["use_layer_skip"] = False
            log("speculative: no layer set pays off; drafting by lookup only")
    store_cfg = sp.pop("datastore", None)
    if store_cfg is not None:
        sp["datastore"] = answer_datastore(model, train_qa, **store_cfg)
        log(f"speculative: answer datastore of {sp['datastore'].num_sequences} answers, "
            f"{len(sp['datastore'])} n-grams")
    sp["skip_layers"] = list(skip or [])
    return sp


def cast_llm_(llm: nn.Module, dtype_name: str) -> nn.Module:
    """Run ``llm`` in another float dtype, in place: every parameter is cast; buffers are not (the
    rotary frequencies stay fp32, as HF keeps them) and int4 layers keep their stored codes and
    fp16 scales (their dequantised runtime copy follows the input dtype)."""
    dtype = getattr(torch, str(dtype_name).removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"variant llm_dtype={dtype_name!r} is not a torch float dtype "
                         "(use 'bfloat16', 'float16' or 'float32')")
    for module in llm.modules():
        if isinstance(module, (QuantEmbedding4, QuantEmbedding8)):
            module.dtype = dtype  # lookups dequantise into it
        if isinstance(module, (QuantLinear4, QuantEmbedding4, QuantEmbedding8, TiedInt8Head)):
            continue
        for param in module.parameters(recurse=False):
            param.data = param.data.to(dtype)
    return llm


def answer_datastore(model: nn.Module, train_qa: list | None, max_ngram: int = 4, min_ngram: int = 2,
                     min_share: float = 0.3):
    """An :class:`NgramDatastore` of the training answers, in the format ``model`` is asked in.

    Args:
        model: the variant (its ``qa_policy`` formats the rounds; its tokenizer encodes them).
        train_qa: one list of ``QAItem`` per training frame.
        max_ngram, min_ngram, min_share: see :class:`NgramDatastore`.

    Raises:
        ValueError: no training QA given.
    """
    if not train_qa:
        raise ValueError("speculative.datastore needs the training split's QA (train_qa); "
                         "remove `datastore` from the variant or pass train_qa")
    blocks = [b for frame in train_qa for b in blocks_for_policy(frame, model.qa_policy)]
    seqs = [encode(model.llm.tokenizer, a) for _, a in blocks]  # as the answers are tokenised in training
    prompt = model.llm.prompt  # answers end with the end-of-turn token when it is one token
    suffix = prompt.answer_suffix_ids
    end_id = suffix[0] if len(suffix) == 1 and suffix[0] in prompt.stop_ids else min(prompt.stop_ids)
    return NgramDatastore(seqs, max_ngram=max_ngram, min_ngram=min_ngram, min_share=min_share, end_id=end_id,
                          keys=[question_key(q) for q, _ in blocks])


def _runtime_layers(model: nn.Module) -> list[nn.Module]:
    """The LLM's quantised layers that may build run-time copies of their weights (``QuantLinear4``,
    the int8 table's tied head): modules with ``weight_bytes`` / ``runtime_bytes`` / ``read_bytes``."""
    return [m for m in model.llm.modules()
            if all(callable(getattr(m, k, None)) for k in ("weight_bytes", "runtime_bytes", "read_bytes"))]


def _uses_workspace(layer: nn.Module) -> bool:
    """Whether a quantised layer computes with the ``'dequant'`` kernel (the shared workspace)."""
    if hasattr(layer, "resolved_kernels"):
        return "dequant" in (layer.resolved_kernels or {}).values()
    return getattr(layer, "kernel", None) == "dequant"


def llm_resident_bytes(model: nn.Module) -> int:
    """Bytes the LLM's weights occupy in memory while it runs: :func:`llm_weight_bytes` plus every
    run-time copy a quantised layer built for its kernel (the fp32 weight of ``kernel='cached'``,
    the repacked copy of the native int4 kernel, the float copy of the int8 table's tied head) and,
    when a layer uses the ``'dequant'`` kernel, the shared dequantisation workspace. Counted after a
    forward (copies and the workspace are built lazily).
    """
    layers = _runtime_layers(model)
    scratch = quant_kernels.workspace_bytes() if any(map(_uses_workspace, layers)) else 0
    return llm_weight_bytes(model) + sum(m.runtime_bytes() - m.weight_bytes() for m in layers) + scratch


def llm_read_bytes(model: nn.Module) -> int:
    """Weight bytes one decode step of the LLM streams from memory: :func:`llm_weight_bytes` with
    each quantised layer counted as what its decode kernel reads (the float copy of ``'cached'``,
    the repacked codes of the native int4 kernel; see ``QuantLinear4.read_bytes``). The whole
    embedding table counts as read (an upper bound: decode reads one row of an untied input table),
    so the bandwidth ceiling derived from it is a lower bound on what the hardware allows.
    """
    return llm_weight_bytes(model) + sum(m.read_bytes("decode") - m.weight_bytes() for m in _runtime_layers(model))


def llm_weight_bytes(model: nn.Module) -> int:
    """Real bytes of the LLM's parameters and buffers (packed int4 counts as stored)."""
    seen, total = set(), 0
    for t in list(model.llm.parameters()) + list(model.llm.buffers()):
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total

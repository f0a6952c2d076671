"""Self-drafting by a low-precision copy of the verifier's own weights (training-free, lossless).

The draft model is the same LLM, LoRA included (merged into the copy's weights, or kept beside
them), at a lower precision: a cast copy (``'bfloat16'`` / ``'float16'``), int8 dynamic Linears
(``'int8'``, fbgemm, CPU only) or packed int4 Linears (``'int4'``), the last two built by
:func:`bevlm.inference.quantization.quantize_model` with the project's quantisation settings. It
proposes ``draft_len`` tokens greedily with its own KV cache; the verifier checks them in one
forward (:class:`.decoder.SelfSpeculativeDecoder`) and keeps the agreeing prefix plus its own next
token. The output is therefore the verifier's greedy decoding token for token whatever the draft
proposes; the draft's precision only decides how many drafts are accepted (the draft-model case
of Leviathan et al., 2023, arXiv 2211.17192, with the target itself at lower precision as the
draft). ``'float32'`` is a correctness reference: with an fp32 verifier it is the verifier's own
weights (nothing copied) and accepts every draft up to float rounding.

Memory: weights the copy leaves as they are (the embedding table and norms of an int4 / int8
copy, everything of a ``'float32'`` copy of an fp32 verifier) are the verifier's tensors, shared,
not duplicated; only cast, merged or quantised weights are new. :meth:`QuantDrafter.resident_bytes`
counts those new bytes (plus the run-time copies of int4 kernels).

KV caches. The draft attends to its own keys and values:

* the prefix: with ``prefix='prefill'`` (default) the draft prefills the prompt text once per set of
  weights and, once per frame, the frame's prefix embeddings that the verifier prefilled
  (``PrefixCache.prefix_embeds``: the same visual / ego / trajectory-query ``inputs_embeds``), at
  the same position ids (under FastV pruning the draft sees the unpruned prefix);
  ``prefix='verifier'`` starts the draft's cache from a copy of the verifier's prefix KV, cast to
  the draft's dtype (no draft prefill). A cache built by hand without ``prefix_embeds`` uses the
  verifier's KV.
* the answer: each question forks the draft's prefix cache. Before every draft the cache is
  brought in line with the verified tokens: it is cropped to the longest common prefix of the
  tokens it holds and the verified ones (accepted drafts stay, rejected ones are dropped), then the
  verified tokens it lacks (the verifier's correction, tokens accepted from lookup drafts) are fed
  in one forward whose last logits give the first draft token.
"""
from __future__ import annotations

import copy
import dataclasses
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bevlm.models.llm import HFCausalLM, PrefixCache
from bevlm.models.llm.architectures import linear_names, model_type
from bevlm.models.llm.cache_api import cache_kwargs, output_cache
from bevlm.models.llm.generation import fork_cache, lm_device, prefill

from ..quantization import QuantLinear4, QuantReport, quantize_model, quant_settings
from ..quantization.int8_dynamic import int8_dynamic_bytes, is_int8_dynamic_linear
from ..quantization.quant_embedding import QuantEmbedding4
from ..quantization.quant_embedding8 import QuantEmbedding8, TiedInt8Head
from ..quantization.settings import QuantSettings
from .layer_skip import crop_cache

#: Draft precisions: float casts, int8 dynamic Linears, packed int4 Linears.
PRECISIONS = ("float32", "bfloat16", "float16", "int8", "int4")
FLOAT_PRECISIONS = ("float32", "bfloat16", "float16")
#: Where the draft's prefix KV comes from (see the module docstring).
PREFIX_MODES = ("prefill", "verifier")
#: The MLP output projection of each family (left out of int8 by default: its activation outliers
#: ruin per-tensor int8 activations, see :mod:`bevlm.inference.quantization.int8_dynamic`).
MLP_OUT_NAMES = ("down_proj", "fc2", "dense_4h_to_h")
#: int4 defaults: SmolLM2's shipped grid (Q4_1: groups of 32, fp16 offsets), the fastest correct kernel.
INT4_DEFAULTS = dict(group_size=32, zero_point="offset", kernel="auto")


@dataclass(frozen=True)
class QuantDraftSetting:
    """Typed ``speculative.quant_draft`` setting (a dict of these fields, or just the precision).

    Args:
        precision: ``'int4'`` (packed int4 Linears, :class:`QuantLinear4`), ``'int8'`` (int8 dynamic
            Linears, CPU), ``'bfloat16'`` / ``'float16'`` (a cast copy) or ``'float32'`` (with an fp32
            verifier: the verifier's own weights, a reference that accepts every draft).
        keep_lora: ``False``: the active LoRA adapter is merged into the copy's weights (``W + BA``,
            then cast / quantised; the verifier keeps its adapters; with int4 / int8 only the
            Linears that are quantised, the others keep their adapters beside the shared float
            weight rather than a merged copy of it); ``True``: the adapters stay
            unmerged beside the copy's base Linears (int4 / int8: only the base is quantised, the
            adapters in the quantisation's ``lora_dtype``, QLoRA-style). ``None``: ``True`` for the
            float precisions (merging would copy every adapted Linear), ``False`` for int4 / int8.
        quant: int4 / int8 only: fields of :class:`~bevlm.inference.quantization.RTNSettings`
            (int4; defaults ``group_size=32, zero_point='offset', kernel='auto'``) or of
            :class:`~bevlm.inference.quantization.Int8DynamicSettings` (int8), e.g.
            ``dict(embeddings='int8')``; ``include`` defaults to every decoder Linear of the
            architecture (int8: without the MLP output projection). ``method`` and ``keep_lora`` are
            set by ``precision`` and ``keep_lora``.
        prefix: ``'prefill'`` (the draft prefills the frame's prefix embeddings itself) or
            ``'verifier'`` (its cache starts from the verifier's prefix KV, cast).

    Raises:
        ValueError: an unknown precision / prefix mode, ``quant`` with a float precision, or bad
            quantisation settings (checked when the setting is built, before any model is copied).
    """

    precision: str = "int4"
    keep_lora: bool | None = None
    quant: dict = field(default_factory=dict)
    prefix: str = "prefill"

    def __post_init__(self) -> None:
        where = "speculative.quant_draft"
        if self.precision not in PRECISIONS:
            raise ValueError(f"{where}: precision={self.precision!r} is not one of {PRECISIONS}")
        if self.prefix not in PREFIX_MODES:
            raise ValueError(f"{where}: prefix={self.prefix!r} is not one of {PREFIX_MODES}")
        if self.keep_lora not in (None, True, False):
            raise ValueError(f"{where}: keep_lora={self.keep_lora!r} must be True, False or None")
        if not isinstance(self.quant, dict):
            raise ValueError(f"{where}: quant={self.quant!r} must be a dict of quantisation settings")
        if self.quant and self.precision in FLOAT_PRECISIONS:
            raise ValueError(f"{where}: quant={self.quant} only applies to precision 'int4' / 'int8', "
                             f"not {self.precision!r}")
        taken = sorted({"method", "keep_lora"} & set(self.quant))
        if taken:
            raise ValueError(f"{where}: quant keys {taken} are set by `precision` / `keep_lora` of quant_draft")
        object.__setattr__(self, "quant", dict(self.quant))
        if self.precision not in FLOAT_PRECISIONS:
            try:
                self.quant_settings(("q_proj",))  # keys and values fail here, not after a model copy
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from err

    @classmethod
    def parse(cls, value: QuantDraftSetting | dict | str) -> QuantDraftSetting:
        """The setting of a config value: a setting, a dict of its fields, or a precision name.

        Raises:
            ValueError: unknown keys (the valid ones are named) or values.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls(precision=value)
        if not isinstance(value, dict):
            raise ValueError(f"speculative.quant_draft must be a precision name {PRECISIONS} or a dict, got "
                             f"{type(value).__name__}")
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(value) - set(valid))
        if unknown:
            raise ValueError(f"speculative.quant_draft: unknown keys {unknown}; valid keys: {valid}")
        return cls(**value)

    @property
    def merges_lora(self) -> bool:
        """Whether LoRA adapters are merged into the copy (see ``keep_lora``)."""
        if self.keep_lora is None:
            return self.precision not in FLOAT_PRECISIONS
        return not self.keep_lora

    def compute_dtype(self, verifier_dtype: torch.dtype) -> torch.dtype:
        """dtype the copy computes in: the float precision, fp32 for int8 (fbgemm's activations),
        the verifier's for int4."""
        if self.precision in FLOAT_PRECISIONS:
            return getattr(torch, self.precision)
        return torch.float32 if self.precision == "int8" else verifier_dtype

    def quant_settings(self, include: tuple[str, ...]) -> QuantSettings | None:
        """The quantisation settings of the copy (None for the float precisions).

        Args:
            include: the decoder Linears of the architecture (the default ``include``).
        """
        if self.precision in FLOAT_PRECISIONS:
            return None
        keep = not self.merges_lora
        if self.precision == "int4":
            return quant_settings(dict(INT4_DEFAULTS, method="rtn", include=tuple(include), keep_lora=keep,
                                       **self.quant))
        names = tuple(n for n in include if n not in MLP_OUT_NAMES) or tuple(include)
        return quant_settings(dict(method="int8_dynamic", include=names, keep_lora=keep, **self.quant))


def _float_dtype(lm: nn.Module) -> torch.dtype:
    """dtype of the first floating-point parameter (the verifier's compute dtype)."""
    return next((p.dtype for p in lm.parameters() if p.is_floating_point()), torch.float32)


def _shared_memo(lm: nn.Module) -> dict:
    """``copy.deepcopy`` memo that makes a copy share every tensor of ``lm`` except LoRA weights
    (parameters, buffers and tensors cached on modules, such as an int4 layer's run-time weight)."""
    memo: dict[int, Any] = {}
    for name, p in lm.named_parameters():
        if ".lora_" not in name:
            memo[id(p)] = p
    for b in lm.buffers():
        memo[id(b)] = b
    for m in lm.modules():
        for v in vars(m).values():
            tensors = v if isinstance(v, tuple) else (v,)
            for t in tensors:
                if isinstance(t, Tensor) and not isinstance(t, nn.Parameter):
                    memo[id(t)] = t
    return memo


def _selected(name: str, settings: QuantSettings) -> bool:
    """Whether quantisation selects the Linear ``name`` (the rule of ``select_linears``)."""
    parts = name.split(".")
    return parts[-1] in settings.include and not set(parts) & set(settings.exclude)


def _merge_lora_into_copy(draft: nn.Module, dtype: torch.dtype, settings: QuantSettings | None = None) -> bool:
    """Replace peft LoRA layers of ``draft`` by plain Linears holding ``W + BA`` of their active
    adapter(s), in new tensors (the base weight may be shared with the verifier: never touched).

    With ``settings`` only the layers that quantisation will replace are merged: the others keep
    their (small) adapters beside the shared base instead of a merged float copy of their weight.

    Returns:
        whether some LoRA layer was left unmerged.
    """
    left = False
    for name, module in list(draft.named_modules()):
        if not (hasattr(module, "lora_A") and hasattr(module, "base_layer")):
            continue
        if settings is not None and not _selected(name, settings):
            left = True
            continue
        base = module.base_layer
        if type(base) is not nn.Linear:
            raise ValueError(f"speculative.quant_draft: the LoRA layer {name} wraps {type(base).__name__}, not "
                             "nn.Linear; use keep_lora=True")
        with torch.no_grad():
            weight = base.weight.detach().float()
            if not getattr(module, "disable_adapters", False):
                merged = set(getattr(module, "merged_adapters", []))
                for adapter in module.active_adapters:
                    if adapter in module.lora_A and adapter not in merged:
                        weight = weight + module.get_delta_weight(adapter).float()
        linear = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None, device="meta")
        linear.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
        if base.bias is not None:
            linear.bias = base.bias
        parent_name, _, child = name.rpartition(".")
        setattr(draft.get_submodule(parent_name) if parent_name else draft, child, linear)
    return left


def _cast_copy_(draft: nn.Module, dtype: torch.dtype) -> None:
    """Give every float parameter of ``draft`` not in ``dtype`` a new parameter in ``dtype`` (tied
    parameters stay tied; quantised modules keep their codes; buffers stay as they are)."""
    new: dict[int, nn.Parameter] = {}
    for module in draft.modules():
        if isinstance(module, (QuantLinear4, QuantEmbedding4, QuantEmbedding8, TiedInt8Head)):
            continue
        for pname, p in list(module._parameters.items()):
            if p is None or not p.is_floating_point() or p.dtype == dtype:
                continue
            if id(p) not in new:
                new[id(p)] = nn.Parameter(p.detach().to(dtype), requires_grad=False)
            module._parameters[pname] = new[id(p)]


@torch.no_grad()
def build_draft_lm(lm: nn.Module, setting: QuantDraftSetting) -> tuple[nn.Module, QuantReport | None]:
    """The draft ``*ForCausalLM``: a low-precision copy of ``lm`` sharing every tensor it keeps.

    Args:
        lm: the verifier's ``*ForCausalLM`` (``HFCausalLM.lm``, LoRA layers injected); never modified.
        setting: the draft setting.

    Returns:
        ``(draft, report)``: the draft in eval mode (``lm`` itself for ``'float32'`` of an fp32
        verifier with kept adapters) and the :class:`QuantReport` of int4 / int8 (else None).
    """
    verifier_dtype = _float_dtype(lm)
    dtype = setting.compute_dtype(verifier_dtype)
    if setting.precision in FLOAT_PRECISIONS and dtype == verifier_dtype and not setting.merges_lora:
        return lm, None  # the same weights: nothing to copy
    draft = copy.deepcopy(lm, _shared_memo(lm))
    settings = setting.quant_settings(linear_names(model_type(lm)))
    if setting.merges_lora and _merge_lora_into_copy(draft, dtype, settings):
        settings = settings.replace(keep_lora=True)  # the adapters of Linears left in float stay beside them
    _cast_copy_(draft, dtype)
    report = quantize_model(draft, settings) if settings is not None else None
    return draft.eval(), report


def _tensor_key(t: Tensor) -> int:
    return t.untyped_storage().data_ptr()


def draft_resident_bytes(draft: nn.Module, verifier: nn.Module) -> int:
    """Bytes the draft holds beyond the verifier's tensors: its own parameters and buffers (tied
    ones once), int8 packed weights and the run-time copies of int4 kernels (built at the first
    forward). 0 when the draft is the verifier."""
    if draft is verifier:
        return 0
    shared = {_tensor_key(t) for t in list(verifier.parameters()) + list(verifier.buffers())}
    seen, total = set(), 0
    for t in list(draft.parameters()) + list(draft.buffers()):
        key = _tensor_key(t)
        if key in shared or key in seen:
            continue
        seen.add(key)
        total += t.untyped_storage().nbytes()
    for m in draft.modules():
        if is_int8_dynamic_linear(m):
            total += int8_dynamic_bytes(m)
        elif isinstance(m, QuantLinear4):
            total += m.runtime_bytes() - m.weight_bytes()
    return total


def _cast_cache_(past: Any, dtype: torch.dtype) -> None:
    """Cast the keys and values of every layer of a transformers cache, in place."""
    for layer in past.layers:
        if getattr(layer, "keys", None) is not None and layer.keys.dtype != dtype:
            layer.keys = layer.keys.to(dtype)
            layer.values = layer.values.to(dtype)


class QuantDrafter:
    """The low-precision draft model of an :class:`HFCausalLM`, built lazily, rebuilt when the
    verifier's weights, adapter or prompt change, with one prefix KV cache per frame.

    Drafts are kept per state of the verifier (up to :attr:`MAX_DRAFTS`), so switching between
    LoRA adapters (multi-domain models) builds each adapter's draft once.

    Args:
        llm: the verifier wrapper (its ``lm`` is copied; its prompt gives the text before the prefix).
        setting: :class:`QuantDraftSetting`.
    """

    #: Drafts kept at once (one per adapter of a multi-LoRA model; stale ones are dropped).
    MAX_DRAFTS = 4

    def __init__(self, llm: HFCausalLM, setting: QuantDraftSetting) -> None:
        self.llm = llm
        self.setting = setting
        self.lm: nn.Module | None = None
        self.report: QuantReport | None = None
        self._key = None
        self._built: dict = {}  # verifier fingerprint -> (draft, report)
        self._dtype = torch.float32
        self._text_kv = None
        self._frame: tuple[Any, Any] | None = None  # (weakref to the verifier's PrefixCache, draft prefix KV)
        self._bytes: int | None = None

    def __deepcopy__(self, memo: dict) -> QuantDrafter:
        """A copy bound to the copied verifier; its draft is built again when first used."""
        new = QuantDrafter(copy.deepcopy(self.llm, memo), self.setting)
        memo[id(self)] = new
        return new

    def model(self) -> nn.Module:
        """The draft ``*ForCausalLM`` of the verifier's current weights and adapter (built at the
        first call for each)."""
        key = self.llm._weights_fingerprint()
        if self.lm is None or key != self._key:
            if key not in self._built:
                if len(self._built) >= self.MAX_DRAFTS:  # drafts of replaced weights
                    self._built.clear()
                self._built[key] = build_draft_lm(self.llm.lm, self.setting)
            self.lm, self.report = self._built[key]
            self._dtype = self.setting.compute_dtype(_float_dtype(self.llm.lm))
            self._key = key
            self._text_kv, self._frame, self._bytes = None, None, None
        return self.lm

    @property
    def resident_bytes(self) -> int:
        """:func:`draft_resident_bytes` of the current draft, counted after its first forward (0 before)."""
        return self._bytes or 0

    def count_bytes(self) -> None:
        """Count :attr:`resident_bytes` once per built draft (after a forward: kernels build lazily)."""
        if self._bytes is None and self.lm is not None:
            self._bytes = draft_resident_bytes(self.lm, self.llm.lm)

    @torch.no_grad()
    def prepare(self) -> None:
        """Build the draft now and run it once on a few tokens (a several-token and a one-token
        forward resolve the int4 kernels of both regimes), so that neither cost falls into the
        first decoded frame; then count :attr:`resident_bytes`."""
        lm = self.model()
        ids = list(self.llm.prompt.prefix_ids[:8]) or [0]
        device = lm_device(lm)
        out = lm(input_ids=torch.tensor([ids], dtype=torch.long, device=device), use_cache=True, logits_to_keep=1)
        lm(input_ids=torch.tensor([ids[-1:]], dtype=torch.long, device=device),
           position_ids=torch.tensor([[len(ids)]], device=device), **cache_kwargs(lm, output_cache(out)),
           use_cache=True, logits_to_keep=1)
        self.count_bytes()

    @torch.no_grad()
    def prefix_cache(self, cache: PrefixCache) -> Any:
        """The draft's KV cache of the frame whose verifier cache is ``cache`` (made once per frame).

        Its entries end at the same position id as the verifier's, ``cache.prefix_len``.
        """
        lm = self.model()
        if self._frame is not None and self._frame[0]() is cache:
            return self._frame[1]
        embeds = cache.prefix_embeds
        use_prefill = (self.setting.prefix == "prefill" and embeds is not None
                       and self.llm.prefix_text_len + embeds.shape[1] == cache.prefix_len)
        if use_prefill:
            if self._text_kv is None:
                ids = torch.tensor([self.llm.prompt.prefix_ids], dtype=torch.long, device=lm_device(lm))  # [1, T0]
                self._text_kv = prefill(lm, lm.get_input_embeddings()(ids))[0]
            past = fork_cache(self._text_kv)
            decoder = lm.get_decoder()
            out = decoder(inputs_embeds=embeds.to(device=lm_device(lm), dtype=self._dtype),
                          **cache_kwargs(decoder, past), use_cache=True)  # [1, P, D] after the T0 text entries
            past = output_cache(out)
        else:
            past = fork_cache(cache.past_key_values)
            _cast_cache_(past, self._dtype)
        self._frame = (weakref.ref(cache), past)
        return past

    def session(self, cache: PrefixCache, query: list[int]) -> DraftSession:
        """A per-question drafting state over the frame's ``cache`` (see :class:`DraftSession`)."""
        return DraftSession(self, cache, query)


class DraftSession:
    """Drafting state of one question: the draft's private KV cache and the tokens it holds.

    Args:
        drafter: the :class:`QuantDrafter`.
        cache: the frame's verifier :class:`PrefixCache` (its ``prefix_len`` places the question).
        query: ids of ``question + query_suffix``, at position ids ``cache.prefix_len ..``.
    """

    def __init__(self, drafter: QuantDrafter, cache: PrefixCache, query: list[int]) -> None:
        self.drafter = drafter
        self.cache = cache
        self.query = list(query)
        self.past = None
        self.base = 0
        self.fed: list[int] = []  # ids whose KV follow the prefix in `past`, in order
        self.forwards = 0

    @torch.no_grad()
    def draft(self, generated: list[int], num_tokens: int, stop_ids: frozenset[int]) -> list[int]:
        """Greedily draft up to ``num_tokens`` ids after the verified answer ``generated``.

        ``generated`` is the verified answer so far; its last id is the pending token (at position
        ``cache.prefix_len + len(query) + len(generated) - 1``). The draft's cache is first cropped
        to the longest prefix it shares with ``query + generated`` and fed the rest.

        Returns:
            the drafted ids (1 .. ``num_tokens``), a stop id only as the last one.
        """
        lm = self.drafter.model()
        if self.past is None:
            self.past = fork_cache(self.drafter.prefix_cache(self.cache))
            self.base = self.past.get_seq_length()
        verified = self.query + list(generated)
        common, limit = 0, min(len(self.fed), len(verified) - 1)
        while common < limit and self.fed[common] == verified[common]:
            common += 1
        if common < len(self.fed):  # rejected drafts (or a pending token fed again): drop their entries
            crop_cache(self.past, self.base + common)
            del self.fed[common:]
        feed = verified[common:]
        start = self.cache.prefix_len + common
        device = lm_device(lm)
        drafted: list[int] = []
        for _ in range(num_tokens):
            ids = torch.tensor([feed], dtype=torch.long, device=device)                    # [1, L]
            positions = torch.arange(start, start + len(feed), device=device)[None]        # [1, L]
            out = lm(input_ids=ids, position_ids=positions, **cache_kwargs(lm, self.past), use_cache=True,
                     logits_to_keep=1)
            self.past = output_cache(out)
            self.forwards += 1
            self.fed += feed
            start += len(feed)
            token = int(out.logits[0, -1].argmax())
            drafted.append(token)
            if token in stop_ids:
                break
            feed = [token]
        self.drafter.count_bytes()
        return drafted

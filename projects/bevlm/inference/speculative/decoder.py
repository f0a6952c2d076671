"""Self-speculative greedy decoding from a frame's prefix cache.

Draft cheaply, verify in one forward of the full model, keep the longest
agreeing prefix (Leviathan et al., 2023, "Fast Inference from Transformers via
Speculative Decoding", arXiv 2211.17192, greedy case). Drafts come from the
model itself, with no training (and no extra weights but the optional low-precision copy):

- n-gram prompt lookup (:mod:`.ngram`) when the suffix of the sequence occurred
  before (question, answer so far, optional extra context ids);
- else, optionally, retrieval from a datastore of answers (:class:`.ngram.NgramDatastore`,
  REST, He et al., 2023, arXiv 2311.08252), e.g. the training split's answers;
- otherwise a draft model: the model with some decoder layers skipped (:mod:`.layer_skip`,
  Draft & Verify, Zhang et al., 2023, arXiv 2309.08168), or a bf16 / int8 / int4 copy of the same
  weights with its own KV cache (:mod:`.quant_draft`, ``quant_draft``);
- or, in batched decoding, trained draft heads on the verifier's own last hidden state
  (:mod:`.draft_heads`, Medusa-style; the one source that needs training).

Every emitted token is the full model's argmax given the exact greedy history,
so the output equals plain greedy decoding (``HFCausalLM.generate_ids``) token
for token, up to float rounding between a one-token and a (k+1)-token forward,
which only matters at exact logit ties.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from bevlm.models.llm import HFCausalLM, PrefixCache
from bevlm.models.llm.cache_api import cache_kwargs
from bevlm.models.llm.generation import choose_token, fork_cache, guarded_choices, lm_device
from bevlm.registry import TASK_UTILS

from .batched import speculative_batch_from_cache
from .draft_heads import DraftHeads, load_draft_heads
from .layer_skip import LayerSkipModel, crop_cache
from .ngram import NgramDatastore, ngram_propose, question_key
from .quant_draft import DraftSession, QuantDrafter, QuantDraftSetting


@dataclass
class SpecStats:
    """Counters of speculative decoding, accumulated over calls.

    Attributes:
        generated: tokens returned.
        full_forwards: forwards of the full model (the query forward included).
        draft_forwards: one-token forwards of the layer-skip model.
        drafted / accepted: all drafted / accepted draft tokens.
        ngram_drafted / ngram_accepted: the part proposed by n-gram lookup.
        skip_drafted / skip_accepted: the part proposed by the layer-skip model.
        store_drafted / store_accepted: the part proposed by the answer datastore.
        quant_drafted / quant_accepted: the part proposed by the low-precision draft model.
        quant_forwards: forwards of the low-precision draft model (a catch-up forward of the
            verified tokens it lacks, then one per further drafted token).
        heads_drafted / heads_accepted: the part started by the trained draft heads (lookup may
            continue such a draft; its tokens count here).
        draft_resident_bytes: bytes the low-precision draft holds beyond the verifier's tensors
            (:func:`.quant_draft.draft_resident_bytes`; 0 without one); a state, kept by
            :meth:`SelfSpeculativeDecoder.reset_stats`.
    """

    generated: int = 0
    full_forwards: int = 0
    draft_forwards: int = 0
    drafted: int = 0
    accepted: int = 0
    ngram_drafted: int = 0
    ngram_accepted: int = 0
    skip_drafted: int = 0
    skip_accepted: int = 0
    store_drafted: int = 0
    store_accepted: int = 0
    quant_drafted: int = 0
    quant_accepted: int = 0
    quant_forwards: int = 0
    heads_drafted: int = 0
    heads_accepted: int = 0
    draft_resident_bytes: int = 0

    @property
    def acceptance(self) -> float:
        """Accepted / drafted tokens (0 when nothing was drafted)."""
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_full_forward(self) -> float:
        """Generated tokens per full-model forward (1.0 for plain greedy)."""
        return self.generated / self.full_forwards if self.full_forwards else 0.0

    def as_dict(self) -> dict:
        """All counters plus ``acceptance`` and ``tokens_per_full_forward``."""
        return dict(asdict(self), acceptance=self.acceptance, tokens_per_full_forward=self.tokens_per_full_forward)


@TASK_UTILS.register_module()
class SelfSpeculativeDecoder:
    """Greedy-exact self-speculative decoder over an :class:`HFCausalLM`.

    Also a :class:`bevlm.models.qa.decoding.FrameDecoder` (:meth:`decode`): a model built with
    ``test_cfg.speculative=dict(...)`` builds it by name from ``bevlm.registry.TASK_UTILS``.

    Args:
        llm: the wrapper (its ``lm``, ``_query_ids`` and ``prompt.stop_ids`` are used).
        skip_layers: decoder layers skipped by the drafter (see
            :func:`.search.search_skip_layers`); None or ``[]`` drafts with the
            full model (acceptance 1, no speed-up: a correctness reference).
        draft_len: tokens drafted per step by the draft model (layer-skip or ``quant_draft``).
        ngram_n: longest n-gram looked up by prompt lookup.
        use_ngram: propose n-gram continuations when they exist.
        use_layer_skip: draft with the layer-skip model when n-gram lookup has
            nothing (or is off).
        ngram_min_n: shortest n-gram looked up.
        ngram_draft_len: longest n-gram proposal (default ``draft_len``); copied
            spans such as c-tags are long, and a long proposal costs only a
            wider verify forward.
        datastore: optional :class:`NgramDatastore` tried after prompt lookup and
            before layer skipping.
        store_draft_len: longest datastore proposal (default ``ngram_draft_len``).
        chain_drafts: keep drafting after a lookup / datastore proposal ends: the next
            proposal is looked up on the answer extended by the draft so far, from either
            source, until ``max_draft_len`` tokens, a stop id or no source proposes. A wide
            verify forward costs little more than a one-token one on a CPU (the weights are
            read once), so longer drafts pay whenever their tail is sometimes right.
        max_draft_len: longest chained draft (default ``ngram_draft_len + store_draft_len``).
        batched: answer a frame's questions as one batch (:meth:`generate_ids_batch`: lookup and
            datastore drafts, no layer skipping) instead of one by one.
        quant_draft: a low-precision copy of the same weights as the draft model (its own KV cache,
            drafting ``draft_len`` tokens) when lookup and the datastore propose nothing, instead
            of layer skipping: :class:`.quant_draft.QuantDraftSetting` or its dict form
            (``dict(precision='int4' | 'int8' | 'bfloat16' | 'float16' | 'float32', keep_lora,
            quant, prefix)``) or a precision name. Batch 1 only (``batched=False``).
        lookup_prefix_text: let prompt lookup also copy from the text the prefix holds as embeddings
            (``PrefixCache.lookup_ids``: the detections line, whose c-tags the answers repeat). Searched
            after everything more recent (question, earlier answers, the answer so far).
        lookup_other_answers: with ``batched``, let prompt lookup also copy from the other questions'
            answers decoded so far in the same batch (one by one, the earlier answers always are).
        draft_heads: trained draft heads (:class:`.draft_heads.DraftHeads` or the path of a file of
            :func:`.draft_heads.save_draft_heads`), batched decoding only: where lookup and the
            datastore propose nothing after a verify step, the heads' guesses from the hidden state of
            the row's last verified token are the draft (continued by lookup with ``chain_drafts``).
        head_draft_len: most tokens taken from the heads per draft (at most their number).
        head_min_prob: a head's guess is drafted only while its probability is at least this.
        head_policy: when the heads draft: ``'fallback'`` only where lookup and the datastore propose
            nothing; ``'override'`` also where their draft disagrees with the heads' guesses (the
            datastore nearly always proposes something, so without it the heads seldom draft).

    Raises:
        ValueError: bad lengths or skip indices (see :class:`LayerSkipModel`); ``quant_draft`` with
            ``batched`` or with a layer-skip set (one draft model at a time); a bad ``quant_draft``;
            ``draft_heads`` without ``batched``, a bad ``head_draft_len`` or ``head_policy``, or a
            heads file that does not fit the LLM (FileNotFoundError where it is missing).
    """

    def __init__(self,
                 llm: HFCausalLM,
                 skip_layers: list[int] | None,
                 draft_len: int = 4,
                 ngram_n: int = 3,
                 use_ngram: bool = True,
                 use_layer_skip: bool = True,
                 ngram_min_n: int = 1,
                 ngram_draft_len: int | None = None,
                 datastore: NgramDatastore | None = None,
                 store_draft_len: int | None = None,
                 chain_drafts: bool = False,
                 max_draft_len: int | None = None,
                 batched: bool = False,
                 quant_draft: QuantDraftSetting | dict | str | None = None,
                 lookup_prefix_text: bool = True,
                 lookup_other_answers: bool = True,
                 draft_heads: DraftHeads | str | None = None,
                 head_draft_len: int = 3,
                 head_min_prob: float = 0.0,
                 head_policy: str = "fallback") -> None:
        if draft_len < 1:
            raise ValueError(f"SelfSpeculativeDecoder: draft_len={draft_len} must be >= 1")
        if not 1 <= ngram_min_n <= ngram_n:
            raise ValueError(f"SelfSpeculativeDecoder: need 1 <= ngram_min_n ({ngram_min_n}) <= ngram_n ({ngram_n})")
        if ngram_draft_len is not None and ngram_draft_len < 1:
            raise ValueError(f"SelfSpeculativeDecoder: ngram_draft_len={ngram_draft_len} must be >= 1")
        self.llm = llm
        self.draft_len = int(draft_len)
        self.ngram_n = int(ngram_n)
        self.ngram_min_n = int(ngram_min_n)
        self.ngram_draft_len = int(ngram_draft_len or draft_len)
        self.use_ngram = bool(use_ngram)
        self.use_layer_skip = bool(use_layer_skip)
        self.datastore = datastore
        self.store_draft_len = int(store_draft_len or self.ngram_draft_len)
        self.chain_drafts = bool(chain_drafts)
        self.batched = bool(batched)
        self.lookup_prefix_text = bool(lookup_prefix_text)
        self.lookup_other_answers = bool(lookup_other_answers)
        self.max_draft_len = int(max_draft_len or self.ngram_draft_len + self.store_draft_len)
        if self.max_draft_len < 1:
            raise ValueError(f"SelfSpeculativeDecoder: max_draft_len={max_draft_len} must be >= 1")
        self.drafter = LayerSkipModel(llm.lm, list(skip_layers or []))
        self.quant_drafter: QuantDrafter | None = None
        if quant_draft is not None:
            if self.batched:
                raise ValueError("SelfSpeculativeDecoder: quant_draft drafts one question at a time; set "
                                 "batched=False (batched decoding drafts by lookup and the datastore only)")
            if self.use_layer_skip and skip_layers:
                raise ValueError(f"SelfSpeculativeDecoder: quant_draft and skip_layers={list(skip_layers)} both "
                                 "ask for a draft model; set use_layer_skip=False or skip_layers=[]")
            self.quant_drafter = QuantDrafter(llm, QuantDraftSetting.parse(quant_draft))
        self.draft_heads: DraftHeads | None = None
        if draft_heads is not None:
            if not self.batched:
                raise ValueError("SelfSpeculativeDecoder: draft_heads draft in batched decoding only; set batched=True")
            if isinstance(draft_heads, str):
                config = llm.lm.config
                draft_heads = load_draft_heads(draft_heads, hidden_size=config.hidden_size,
                                               vocab_size=config.vocab_size)
            if not isinstance(draft_heads, DraftHeads):
                raise ValueError(f"SelfSpeculativeDecoder: draft_heads is {type(draft_heads).__name__}; give a "
                                 "DraftHeads or the path of a file of save_draft_heads")
            if head_draft_len < 1:
                raise ValueError(f"SelfSpeculativeDecoder: head_draft_len={head_draft_len} must be >= 1")
            self.draft_heads = draft_heads.to(lm_device(llm.lm))
        if head_policy not in ("fallback", "override"):
            raise ValueError(f"SelfSpeculativeDecoder: head_policy={head_policy!r}; use 'fallback' or 'override'")
        self.head_draft_len = int(head_draft_len)
        self.head_min_prob = float(head_min_prob)
        self.head_policy = head_policy
        self.stats = SpecStats()
        #: set to a list to record each batched frame's drafting inputs, answers and verify steps
        #: (:func:`.batched.speculative_batch_from_cache`; replayed under other drafting policies by
        #: :mod:`.replay`); None records nothing
        self.trace: list[dict] | None = None

    @property
    def skip_layers(self) -> list[int]:
        """The skipped decoder layers (sorted)."""
        return list(self.drafter.skip_layers)

    def reset_stats(self) -> None:
        """Zero the counters (the draft's resident bytes are kept)."""
        self.stats = SpecStats(draft_resident_bytes=self.stats.draft_resident_bytes)

    def _propose(self, history: list[int], token: int, past, pos: int, limit: int,
                 answer: list[int], key: str | None = None,
                 session: DraftSession | None = None) -> tuple[list[int], str]:
        """Draft at most ``limit`` tokens after ``token``: prompt lookup, datastore, then the draft
        model (the low-precision copy's ``session``, else layer skip).

        ``answer`` is the answer so far (its last id is ``token``); the datastore matches on
        it, started by the question's template ``key`` (:func:`.ngram.question_key`).
        """
        drafts, source = self.model_free_draft(history, limit, answer, key)
        if drafts:
            return drafts, source
        if session is not None:
            before = session.forwards
            drafted = session.draft(answer, min(limit, self.draft_len), self.llm.prompt.stop_ids)
            self.stats.quant_forwards += session.forwards - before
            return drafted, "quant"
        if self.use_layer_skip:
            drafted = self.drafter.draft(token, past, pos, min(limit, self.draft_len), self.llm.prompt.stop_ids)
            self.stats.draft_forwards += len(drafted)
            return drafted, "skip"
        return [], "none"

    def prefix_lookup_ids(self, cache: PrefixCache) -> list[int]:
        """The ids of the prefix's text that prompt lookup may copy from (empty when off or none)."""
        return list(cache.lookup_ids or []) if self.lookup_prefix_text else []

    def question_key(self, question: str) -> str | None:
        """The datastore key of ``question`` (None without a datastore)."""
        return question_key(question) if self.datastore is not None else None

    def model_free_draft(self, history: list[int], limit: int, answer: list[int],
                         key: str | None) -> tuple[list[int], str]:
        """At most ``limit`` drafted ids by prompt lookup / the datastore (no model), and their source."""
        if self.chain_drafts:
            return self._chain(history, limit, answer, key)
        return self._lookup(history, limit, answer, key)

    def head_guess(self, hidden: torch.Tensor) -> list[int]:
        """The draft heads' guesses after the token that ``hidden`` (``[D]``, last layer) chose."""
        return self.draft_heads.propose(hidden, min(self.head_draft_len, self.draft_heads.num_heads),
                                        self.head_min_prob, self.llm.prompt.stop_ids)

    def prefers_heads(self, drafts: list[int], guess: list[int]) -> bool:
        """Whether the heads' ``guess`` replaces the model-free ``drafts``: where there are none, and
        with ``head_policy='override'`` where the two differ within the guess (a model-free draft that
        holds the whole guess is kept: it is at least as long)."""
        if not drafts or self.head_policy == "fallback":
            return bool(guess) and not drafts
        agree = 0
        while agree < min(len(drafts), len(guess)) and drafts[agree] == guess[agree]:
            agree += 1
        return agree < len(guess)

    def head_draft(self, guess: list[int], history: list[int], limit: int, answer: list[int],
                   key: str | None) -> list[int]:
        """A draft that starts with the heads' ``guess`` and, with ``chain_drafts``, goes on with
        model-free proposals looked up on the answer extended by it (at most ``limit`` tokens)."""
        stop_ids = self.llm.prompt.stop_ids
        limit = min(limit, self.max_draft_len)
        drafts = list(guess[:limit])
        if self.chain_drafts and drafts and drafts[-1] not in stop_ids and len(drafts) < limit:
            drafts += self.model_free_draft(history + drafts, limit - len(drafts), answer + drafts, key)[0]
        return drafts

    @torch.no_grad()
    def generate_ids_batch(self, cache: PrefixCache, questions: list[str],
                           max_new_tokens: int | list[int] = 48) -> list[list[int]]:
        """Greedy ids of several questions of one frame, decoded as one batch with model-free
        drafts (:mod:`.batched`); identical to ``HFCausalLM.generate_ids`` per question."""
        return speculative_batch_from_cache(self, cache, questions, max_new_tokens)

    def _lookup(self, history: list[int], limit: int, answer: list[int], key: str | None) -> tuple[list[int], str]:
        """One model-free proposal: prompt lookup first, then the datastore."""
        if self.use_ngram:
            proposal = ngram_propose(history, self.ngram_n, self.ngram_min_n, min(limit, self.ngram_draft_len))
            if proposal:
                return proposal, "ngram"
        if self.datastore is not None:
            proposal = self.datastore.propose([NgramDatastore.BEGIN] + answer, min(limit, self.store_draft_len),
                                              self.llm.prompt.stop_ids, key=key)
            if proposal:
                return proposal, "store"
        return [], "none"

    def _chain(self, history: list[int], limit: int, answer: list[int], key: str | None) -> tuple[list[int], str]:
        """Model-free proposals chained on the growing draft (see ``chain_drafts``)."""
        stop_ids = self.llm.prompt.stop_ids
        limit = min(limit, self.max_draft_len)
        drafts: list[int] = []
        sources: set[str] = set()
        while len(drafts) < limit and not (drafts and drafts[-1] in stop_ids):
            proposal, source = self._lookup(history + drafts, limit - len(drafts), answer + drafts, key)
            if not proposal:
                break
            sources.add(source)
            for tok in proposal:
                drafts.append(tok)
                if tok in stop_ids:
                    break
        if not drafts:
            return [], "none"
        # the stats count a pure prompt-lookup draft as n-gram, any draft the datastore joined as store
        return drafts, "ngram" if sources == {"ngram"} else "store"

    @torch.no_grad()
    def generate_ids(self, cache: PrefixCache, question: str, max_new_tokens: int = 48,
                     context_ids: list[int] | None = None) -> list[int]:
        """Greedy answer ids to ``question``, identical to ``HFCausalLM.generate_ids``.

        Args:
            cache: the frame's :class:`PrefixCache` (copied, never mutated).
            question: question text.
            max_new_tokens: at most this many tokens are returned.
            context_ids: extra ids searched by n-gram lookup only (e.g. the
                frame's earlier answers); they are not fed to the model.

        Returns:
            generated ids, stop token excluded.
        """
        lm = self.llm.lm
        stop_ids = self.llm.prompt.stop_ids
        stop_rule = self.llm.stop_rule  # the same loop rule as the plain decoder, same checks
        device = lm_device(lm)
        query = self.llm._query_ids(question)
        history = self.prefix_lookup_ids(cache) + list(context_ids or []) + query  # what n-gram lookup may copy from
        key = self.question_key(question)
        generated: list[int] = []
        if max_new_tokens <= 0:
            return generated
        session = self.quant_drafter.session(cache, query) if self.quant_drafter is not None else None
        past = fork_cache(cache.past_key_values)
        # Position ids continue from prefix_len; a pruned prefix cache holds fewer KV entries
        # than positions, so the entry count (what cropping keeps) is tracked apart.
        pos = cache.prefix_len
        inputs = torch.tensor([query], dtype=torch.long, device=device)  # [1, Lq]
        positions = torch.arange(pos, pos + len(query), device=device)[None]  # [1, Lq]
        out = lm(input_ids=inputs, position_ids=positions, **cache_kwargs(lm, past), use_cache=True, logits_to_keep=1)
        self.stats.full_forwards += 1
        pos += len(query)
        end_check = self.llm.end_check(question)  # the plain decoder's guard, same checks
        new_tokens = [choose_token(out.logits[0, -1], stop_ids, end_check, generated)]
        while True:
            for token in new_tokens:  # full-model greedy choices, in order
                if token in stop_ids:
                    self.stats.generated += len(generated)
                    return generated
                generated.append(token)
                history.append(token)
                if stop_rule is not None and (cut := stop_rule.truncate_to(generated)) is not None:
                    del generated[cut:]
                    self.stats.generated += len(generated)
                    return generated
                if len(generated) >= max_new_tokens:
                    self.stats.generated += len(generated)
                    return generated
            pending = generated[-1]  # at position `pos`, not yet in `past`
            # k drafts + the bonus token never exceed the budget.
            limit = max_new_tokens - len(generated) - 1
            drafts, source = (self._propose(history, pending, past, pos, limit, generated, key, session)
                              if limit > 0 else ([], "none"))
            kv_len = past.get_seq_length()  # verified entries, every layer
            ids = torch.tensor([[pending] + drafts], dtype=torch.long, device=device)  # [1, 1 + k]
            positions = torch.arange(pos, pos + ids.shape[1], device=device)[None]  # [1, 1 + k]
            out = lm(input_ids=ids, position_ids=positions, **cache_kwargs(lm, past), use_cache=True,
                     logits_to_keep=ids.shape[1])
            self.stats.full_forwards += 1
            greedy = out.logits[0].argmax(-1).tolist()  # [1 + k]: choice after pending, d1, .., dk
            if end_check is not None:  # the choice after d_j where the answer so far is generated + d1..dj
                greedy = guarded_choices(out.logits[0], greedy, stop_ids, end_check, generated, drafts)
            accepted = 0
            while accepted < len(drafts) and drafts[accepted] == greedy[accepted]:
                accepted += 1
            self.count_drafts(source, len(drafts), accepted)
            pos += 1 + accepted  # pending + accepted drafts are verified
            crop_cache(past, kv_len + 1 + accepted)
            new_tokens = greedy[:accepted + 1]

    def count_drafts(self, source: str, drafted: int, accepted: int) -> None:
        """Add one verify step's drafted / accepted tokens to the stats of ``source``."""
        self.stats.drafted += drafted
        self.stats.accepted += accepted
        if source == "ngram":
            self.stats.ngram_drafted += drafted
            self.stats.ngram_accepted += accepted
        elif source == "skip":
            self.stats.skip_drafted += drafted
            self.stats.skip_accepted += accepted
        elif source == "store":
            self.stats.store_drafted += drafted
            self.stats.store_accepted += accepted
        elif source == "heads":
            self.stats.heads_drafted += drafted
            self.stats.heads_accepted += accepted
        elif source == "quant":
            self.stats.quant_drafted += drafted
            self.stats.quant_accepted += accepted
            self.stats.draft_resident_bytes = self.quant_drafter.resident_bytes

    def answer(self, cache: PrefixCache, question: str, max_new_tokens: int = 48,
               context_ids: list[int] | None = None) -> str:
        """Decoded answer text of :meth:`generate_ids`."""
        return self.llm.decode_ids(self.generate_ids(cache, question, max_new_tokens, context_ids))

    def decode(self, cache: PrefixCache, texts: list[str], budgets: list[int]) -> list[list[int]]:
        """Greedy ids of a frame's question blocks (the ``FrameDecoder`` interface).

        With ``batched`` all blocks are drafted and verified as one batch; otherwise they are
        decoded one by one, each given the ids of the earlier blocks' questions and answers as
        lookup context (c-tags and answer templates repeat across a frame's QA; the model never
        sees this context). Either way every block gets its plain greedy ids.

        Args:
            cache: the frame's prefix cache (not mutated).
            texts: question blocks, in the order they are asked.
            budgets: max new tokens of each block.

        Returns:
            One list of generated ids per block.
        """
        if self.batched:
            return self.generate_ids_batch(cache, texts, budgets)
        ids: list[list[int]] = []
        context: list[int] = []
        for text, budget in zip(texts, budgets):
            ids.append(self.generate_ids(cache, text, budget, context_ids=context))
            context = context + list(self.llm.tokenizer(text, add_special_tokens=False)["input_ids"]) + ids[-1]
        return ids

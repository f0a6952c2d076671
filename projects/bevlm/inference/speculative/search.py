"""Training-free search of the layers the self-drafter skips.

Draft & Verify (Zhang et al., 2023, arXiv 2309.08168) picks the skipped layers
by a black-box search on a few calibration prompts. Here the search is greedy
forward selection (add the one layer whose removal scores best, repeat up to
``max_skip`` times, keep the best set seen), scored by a cost model instead of
wall time (wall time on a shared CPU is noise):

    expected speed-up = (tokens greedy decoding needs forwards for)
                        / (sum over verify steps of c_verify(k) + k * c_draft)

with ``c_draft`` the parameter-bytes ratio of the drafter
(:meth:`LayerSkipModel.cost_ratio`; batch-1 decoding is bandwidth-bound) and
``c_verify(k) = 1 + verify_token_cost * k``. Acceptance is estimated by teacher
forcing: one forward of the drafter over ``question + greedy answer`` gives,
at each answer position, whether its argmax equals the full model's next
token; a draft of k tokens from position j is accepted up to the first miss.
(The real drafter attends to full-model keys/values of verified answer tokens,
the estimate to its own: a slightly pessimistic proxy.) The chosen set is then
run for real and its measured acceptance and tokens/s are reported.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import torch

from bevlm.models.llm import HFCausalLM, PrefixCache
from bevlm.models.llm.generation import fork_cache, lm_device

from .decoder import SelfSpeculativeDecoder
from .layer_skip import LayerSkipModel


@dataclass
class SkipSearchResult:
    """Outcome of :func:`search_skip_layers`.

    Attributes:
        skip_layers: the best skipped layers found (sorted). When
            ``expected_speedup <= 1`` no set pays off: decode with n-gram
            lookup only (``use_layer_skip=False``).
        draft_len: the draft length that scored best with them.
        expected_speedup: cost-model speed-up of the choice (1.0 = plain greedy).
        acceptance: teacher-forced draft acceptance of the choice.
        cost_ratio: drafter cost per token / full-model cost per token.
        trials: every scored set: dicts with ``skip_layers``, ``draft_len``,
            ``expected_speedup``, ``acceptance``, ``cost_ratio``.
        measured: real decoding of the calibration set with the choice (layer
            skip only, no n-gram): ``acceptance``, ``tokens_per_full_forward``,
            ``greedy_tok_s``, ``spec_tok_s``, ``speedup``, ``identical``; None
            when ``measure=False``.
    """

    skip_layers: list[int]
    draft_len: int
    expected_speedup: float
    acceptance: float
    cost_ratio: float
    trials: list[dict] = field(default_factory=list)
    measured: dict | None = None


def _teacher_forced_matches(llm: HFCausalLM, model: LayerSkipModel, cache: PrefixCache,
                            query: list[int], answer: list[int], stopped: bool) -> list[bool]:
    """Whether the drafter's argmax equals the greedy next token at each answer position.

    Returns:
        ``matches[j]`` for j = 1 .. len(answer) (the final entry is the stop token
        when the answer ended at one): does the drafter, fed ``query +
        answer[:j]``, predict ``answer[j]``?
    """
    device = lm_device(model.lm)
    seq = query + answer
    ids = torch.tensor([seq], dtype=torch.long, device=device)               # [1, Lq + La]
    past = fork_cache(cache.past_key_values)
    preds = model.logits(ids, past, cache.prefix_len)[0].argmax(-1).tolist()  # [Lq + La]
    stop_ids = llm.prompt.stop_ids
    matches = []
    for j in range(1, len(answer) + 1):
        pred = preds[len(query) + j - 1]
        if j < len(answer):
            matches.append(pred == answer[j])
        elif stopped:
            matches.append(pred in stop_ids)
    return matches


def _simulate(matches: list[bool], draft_len: int, cost_ratio: float,
              verify_token_cost: float) -> tuple[float, float, int]:
    """Cost-model decode of one answer. Returns ``(cost, accepted, drafted)``.

    One verify step from position j drafts k = min(draft_len, remaining) tokens,
    accepts the run of matches (at most k) and emits one more token.
    """
    j, cost, accepted, drafted = 0, 0.0, 0, 0
    n = len(matches)
    while j < n:
        k = min(draft_len, n - j)
        run = 0
        while run < k and matches[j + run]:
            run += 1
        cost += 1.0 + verify_token_cost * k + cost_ratio * k
        accepted += run
        drafted += k
        j += run + 1
    return cost, accepted, drafted


def _score(matches_per_item: list[list[bool]], draft_lens: list[int], cost_ratio: float,
           verify_token_cost: float) -> tuple[float, float, int]:
    """Best ``(expected_speedup, acceptance, draft_len)`` over ``draft_lens``."""
    plain = sum(len(m) for m in matches_per_item)  # one full forward per token after the first
    best = (0.0, 0.0, draft_lens[0])
    for k in draft_lens:
        cost = acc = dr = 0.0
        for matches in matches_per_item:
            c, a, d = _simulate(matches, k, cost_ratio, verify_token_cost)
            cost, acc, dr = cost + c, acc + a, dr + d
        speedup = plain / cost if cost else 1.0
        if speedup > best[0]:
            best = (speedup, acc / dr if dr else 0.0, k)
    return best


@torch.no_grad()
def _measure(llm: HFCausalLM, calib: list[tuple[PrefixCache, str]], skip_layers: list[int], draft_len: int,
             max_new_tokens: int) -> dict:
    """Real greedy vs layer-skip speculative decoding on ``calib`` (interleaved per item)."""
    decoder = SelfSpeculativeDecoder(llm, skip_layers, draft_len=draft_len, use_ngram=False)
    t_greedy = t_spec = 0.0
    tokens = 0
    identical = True
    for cache, question in calib:
        t0 = time.perf_counter()
        ref = llm.generate_ids(cache, question, max_new_tokens)
        t1 = time.perf_counter()
        out = decoder.generate_ids(cache, question, max_new_tokens)
        t2 = time.perf_counter()
        t_greedy, t_spec, tokens = t_greedy + t1 - t0, t_spec + t2 - t1, tokens + len(ref)
        identical = identical and out == ref
    stats = decoder.stats
    return dict(acceptance=stats.acceptance, tokens_per_full_forward=stats.tokens_per_full_forward,
                greedy_tok_s=tokens / t_greedy if t_greedy else 0.0,
                spec_tok_s=tokens / t_spec if t_spec else 0.0,
                speedup=t_greedy / t_spec if t_spec else 0.0, identical=identical)


@torch.no_grad()
def search_skip_layers(llm: HFCausalLM,
                       calib: list[tuple[PrefixCache, str]],
                       max_skip: int,
                       max_new_tokens: int = 32,
                       draft_lens: tuple[int, ...] = (2, 3, 4, 6),
                       candidates: list[int] | None = None,
                       sample_per_round: int | None = None,
                       verify_token_cost: float = 0.05,
                       seed: int = 0,
                       measure: bool = True) -> SkipSearchResult:
    """Greedy forward selection of the skipped layers on calibration questions.

    Args:
        llm: the wrapper whose ``lm`` drafts and verifies.
        calib: ``(prefix cache, question)`` pairs (caches are not mutated).
        max_skip: most layers skipped (>= 1).
        max_new_tokens: greedy answer length used for calibration.
        draft_lens: draft lengths scored for every set; the best is reported.
        candidates: layers that may be skipped (default ``1 .. num_layers-1``).
        sample_per_round: score at most this many random candidates per round
            (None: all), to bound the search time on deep models.
        verify_token_cost: extra cost of each drafted token in the verify
            forward, relative to a one-token full forward.
        seed: RNG seed of ``sample_per_round``.
        measure: run the chosen set for real and fill ``measured``.

    Returns:
        :class:`SkipSearchResult`.

    Raises:
        ValueError: empty ``calib``/``draft_lens``, ``max_skip < 1``, bad candidates.
    """
    if not calib:
        raise ValueError("search_skip_layers: calib is empty; pass (PrefixCache, question) pairs")
    if max_skip < 1 or not draft_lens or min(draft_lens) < 1:
        raise ValueError(f"search_skip_layers: need max_skip >= 1 (got {max_skip}) and draft_lens >= 1 "
                         f"(got {draft_lens})")
    num_layers = len(llm.lm.get_decoder().layers)
    pool = list(range(1, num_layers)) if candidates is None else sorted(set(candidates))
    if any(not 0 < c < num_layers for c in pool):
        raise ValueError(f"search_skip_layers: candidates {pool} must lie in 1..{num_layers - 1}")
    rng = random.Random(seed)
    items = []  # (cache, query ids, greedy answer, stopped at a stop token)
    for cache, question in calib:
        answer = llm.generate_ids(cache, question, max_new_tokens)
        items.append((cache, llm._query_ids(question), answer, len(answer) < max_new_tokens))

    trials: list[dict] = []

    def evaluate(skip: list[int]) -> dict:
        model = LayerSkipModel(llm.lm, skip)
        matches = [_teacher_forced_matches(llm, model, c, q, a, s) for c, q, a, s in items]
        ratio = model.cost_ratio()
        speedup, acceptance, k = _score(matches, list(draft_lens), ratio, verify_token_cost)
        trial = dict(skip_layers=sorted(skip), draft_len=k, expected_speedup=speedup,
                     acceptance=acceptance, cost_ratio=ratio)
        trials.append(trial)
        return trial

    best = evaluate([])
    current: list[int] = []
    for _ in range(min(max_skip, len(pool))):
        options = [c for c in pool if c not in current]
        if sample_per_round is not None and len(options) > sample_per_round:
            options = rng.sample(options, sample_per_round)
        scored = [evaluate(current + [c]) for c in options]
        step = max(scored, key=lambda t: t["expected_speedup"])
        current = step["skip_layers"]
        if step["expected_speedup"] > best["expected_speedup"]:
            best = step
    result = SkipSearchResult(skip_layers=best["skip_layers"], draft_len=best["draft_len"],
                              expected_speedup=best["expected_speedup"], acceptance=best["acceptance"],
                              cost_ratio=best["cost_ratio"], trials=trials)
    if measure:
        result.measured = _measure(llm, calib, result.skip_layers, result.draft_len, max_new_tokens)
    return result

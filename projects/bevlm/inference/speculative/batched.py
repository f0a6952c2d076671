"""Speculative decoding of a frame's questions as one batch over the shared prefix.

Batching the Q questions of a frame (one forward reads the weights once for every row, see
:mod:`bevlm.models.llm.batched_generation`) and drafting with model-free proposals (prompt
lookup, the answer datastore) compose: each step every live row feeds its pending token and its
own draft, ``[pending, d1 .. dk_r]`` padded to the longest draft of the step, and one batched
forward verifies all rows. Rows accept different numbers of drafts, so instead of cropping the
shared KV cache row by row, the rejected and padded entries stay in the cache and are masked out
of every later step by the attention mask; each row's position ids continue from its own
accepted length. A row therefore attends exactly to its own verified tokens at their own
positions: the output equals plain greedy decoding of each question alone.

With ``decoder.draft_heads`` (trained heads, :mod:`.draft_heads`), a row whose model-free drafts
come up empty (or, with ``head_policy='override'``, disagree with the heads) drafts the heads'
guesses instead: the input of the LM head in each verify forward
(the last-layer hidden states of the fed positions) is tapped, and the state at the row's last
accepted position guesses the tokens after its pending one.

With ``decoder.trace`` a list, each call appends one frame record: the drafts' inputs (``context``,
``queries``, ``keys``, ``budgets``), the ``answers`` and how each ``ended`` (``stop``, ``rule``,
``budget``; ``cut_from``: a rule-ended row's ids before the cut), and per verify forward
``[rows, width, cache length, seconds]`` (``steps``); :mod:`.replay` replays such records under other
drafting policies.
"""
from __future__ import annotations

import time
from contextlib import nullcontext

import torch

from bevlm.models.llm.batched_generation import prefill_queries
from bevlm.models.llm.cache_api import cache_kwargs, output_cache
from bevlm.models.llm.generation import PrefixCache, choose_token, guarded_choices, lm_device

from .draft_heads import HiddenTap


@torch.no_grad()
def speculative_batch_from_cache(decoder, cache: PrefixCache, questions: list[str],
                                 budgets: int | list[int]) -> list[list[int]]:
    """Greedy answer ids of several questions of one frame, speculatively decoded as one batch.

    Args:
        decoder: a :class:`SelfSpeculativeDecoder` (its model-free proposals, stop ids, stop rule
            and stats are used; layer-skip drafting is not used in batch mode).
        cache: the frame's :class:`PrefixCache` (not mutated).
        questions: question texts.
        budgets: max new tokens for all rows, or one per row.

    Returns:
        generated ids per question, stop token excluded (as ``HFCausalLM.generate_ids``).
    """
    llm, stats = decoder.llm, decoder.stats
    lm, stop_ids, stop_rule = llm.lm, llm.prompt.stop_ids, llm.stop_rule
    n = len(questions)
    if n == 0:
        return []
    budgets = [budgets] * n if isinstance(budgets, int) else list(budgets)
    device = lm_device(lm)
    queries = [llm._query_ids(q) for q in questions]
    keys = [decoder.question_key(q) for q in questions]
    # for lookup: the prefix's text (the detections line), then every question of the frame
    shared_context = decoder.prefix_lookup_ids(cache) + [t for q in queries for t in q]
    # rows of similar length prefilled together, assembled into one left-padded batch cache
    logits, mask, past, forwards = prefill_queries(lm, cache, queries, llm.pad_id, device, llm.prefill_overhead)
    stats.full_forwards += forwards
    next_pos = [cache.prefix_len + len(q) for q in queries]  # position id of each row's next fed token
    out_ids: list[list[int]] = [[] for _ in range(n)]
    ended = ["budget" for _ in range(n)]  # why each row stopped (for the trace)
    cut_from: dict[int, list[int]] = {}    # a row's ids when the stop rule cut them (for the trace)
    steps: list[list] = []          # [rows, width, cache length, seconds] per verify forward (for the trace)
    active = list(range(n))                   # original row index of each batch row
    done = [budgets[r] <= 0 for r in range(n)]
    end_checks = [llm.end_check(q) for q in questions]  # the plain decoder's guard, same checks
    new_tokens = {r: [choose_token(logits[k], stop_ids, end_checks[r], out_ids[r])]
                  for k, r in enumerate(active)}
    heads = decoder.draft_heads
    states: dict[int, torch.Tensor] = {}  # per row: the hidden state that chose its pending token
    with (HiddenTap(lm) if heads is not None else nullcontext()) as tap:
        while True:
            # 1. take each row's verified tokens, in order, until a stop, the rule or the budget
            for r in active:
                if done[r]:
                    continue
                for tok in new_tokens[r]:
                    if tok in stop_ids:
                        done[r], ended[r] = True, "stop"
                        break
                    out_ids[r].append(tok)
                    if stop_rule is not None and (cut := stop_rule.truncate_to(out_ids[r])) is not None:
                        cut_from[r] = list(out_ids[r])
                        del out_ids[r][cut:]
                        done[r], ended[r] = True, "rule"
                        break
                    if len(out_ids[r]) >= budgets[r]:
                        done[r], ended[r] = True, "budget"
                        break
            keep = [k for k, r in enumerate(active) if not done[r]]
            if not keep:
                break
            if len(keep) < len(active):  # finished rows leave the batch and its cache
                sel = torch.tensor(keep, device=device)
                past.batch_select_indices(sel)
                mask = mask[sel]
                active = [active[k] for k in keep]
            # 2. drafts: pending token + model-free proposal per row
            rows, sources = [], []
            for r in active:
                limit = budgets[r] - len(out_ids[r]) - 1
                # the other rows' answers so far (c-tags and phrasings repeat across a frame's answers), then
                # the row's own question and answer: prompt lookup prefers the most recent match
                others = [t for o in range(n) if o != r for t in out_ids[o]] if decoder.lookup_other_answers else []
                history = shared_context + others + queries[r] + out_ids[r]
                drafts, source = decoder.model_free_draft(history, limit, out_ids[r], keys[r]) if limit > 0 else ([], "none")
                if limit > 0 and r in states and (not drafts or decoder.head_policy == "override"):
                    guess = decoder.head_guess(states[r])  # only where the heads may draft
                    if decoder.prefers_heads(drafts, guess):
                        drafts, source = decoder.head_draft(guess, history, limit, out_ids[r], keys[r]), "heads"
                rows.append([out_ids[r][-1]] + drafts)
                sources.append(source)
            width = max(len(x) for x in rows)
            feed = torch.full((len(active), width), llm.pad_id, dtype=torch.long, device=device)  # [A, W]
            step_mask = torch.zeros((len(active), width), dtype=torch.long, device=device)
            for k, x in enumerate(rows):
                feed[k, :len(x)] = torch.tensor(x, device=device)
                step_mask[k, :len(x)] = 1
            positions = torch.tensor([next_pos[r] for r in active], device=device)[:, None] + torch.arange(
                width, device=device)[None]                                                   # [A, W]
            mask = torch.cat([mask, step_mask], dim=1)
            start = time.perf_counter()
            out = lm(input_ids=feed, attention_mask=mask, position_ids=positions, **cache_kwargs(lm, past),
                     use_cache=True, logits_to_keep=width)
            stats.full_forwards += 1
            past = output_cache(out)
            greedy = out.logits.argmax(-1).tolist()  # [A, W]: the choice after each fed token
            steps.append([len(active), width, mask.shape[1], time.perf_counter() - start])
            # 3. accept the longest matching draft prefix; mask the rest of the row's entries
            for k, (r, x, source) in enumerate(zip(active, rows, sources)):
                drafts = x[1:]
                if end_checks[r] is not None:
                    greedy[k] = guarded_choices(out.logits[k], greedy[k], stop_ids, end_checks[r], out_ids[r], drafts)
                accepted = 0
                while accepted < len(drafts) and drafts[accepted] == greedy[k][accepted]:
                    accepted += 1
                decoder.count_drafts(source, len(drafts), accepted)
                mask[k, mask.shape[1] - width + 1 + accepted:] = 0
                next_pos[r] += 1 + accepted
                new_tokens[r] = greedy[k][:accepted + 1]
                if heads is not None:  # the state that chose the new pending token guesses what follows it
                    states[r] = tap.hidden[k, -width + accepted]
    stats.generated += sum(len(x) for x in out_ids)
    if decoder.trace is not None:
        decoder.trace.append(dict(context=shared_context, queries=queries, keys=keys, budgets=budgets,
                                  answers=[list(x) for x in out_ids], ended=ended,
                                  cut_from={str(r): x for r, x in cut_from.items()}, steps=steps,
                                  draft_heads=heads is not None))
    return out_ids

"""Replay batched speculative decoding under other drafting policies, without running the model.

Model-free drafts (prompt lookup, the answer datastore) depend only on the tokens decoded so far,
and the verifier accepts exactly the longest prefix of a draft that equals the greedy answer. So
once a frame's greedy answers are known (a trace of :func:`.batched.speculative_batch_from_cache`,
recorded with ``decoder.trace = []``), any drafting policy can be replayed token-exactly: which rows
verify together at each step, how wide each verify forward is, how many drafts each row accepts.
What a policy costs in time then follows from a per-step cost model fitted on the trace's measured
verify forwards (:func:`fit_step_cost`: a fixed part, which on a CPU is mostly reading the weights,
plus parts per row, per fed position and per attended cache entry).

The replay of the policy that made the trace must reproduce the trace's steps (:func:`check_trace`);
that is the check that the replay is faithful. Policies are functions
``policy(decoder, history, limit, answer, key, truth) -> (drafts, source)`` where ``truth`` is the
rest of the greedy answer: real policies must ignore it; :func:`truncate_to_accepted` uses it to
give the bound of a perfect draft-length rule on the same drafts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .ngram import lookup_continuations

Policy = Callable[..., tuple[list[int], str]]


def current_policy(decoder, history: list[int], limit: int, answer: list[int], key, truth) -> tuple[list[int], str]:
    """The decoder's own drafts (``model_free_draft``)."""
    return decoder.model_free_draft(history, limit, answer, key)


def truncate_to_accepted(decoder, history, limit, answer, key, truth) -> tuple[list[int], str]:
    """The decoder's drafts cut to the part the verifier will accept (an oracle: the fewest fed
    positions these drafts allow, with the same steps)."""
    drafts, source = decoder.model_free_draft(history, limit, answer, key)
    return drafts[:_agree(drafts, truth, set(decoder.llm.prompt.stop_ids))], source


def max_draft(m: int) -> Policy:
    """The decoder's drafts, at most ``m`` tokens (``max_draft_len`` lowered to ``m``)."""
    def policy(decoder, history, limit, answer, key, truth):
        return decoder.model_free_draft(history, min(limit, m), answer, key)
    policy.__name__ = f"max_draft({m})"
    return policy


def lookup_alternatives(k: int) -> Policy:
    """Up to ``k`` candidate drafts per row, each verified as a row of its own in the same forward:
    the decoder's own draft, then drafts that start from other earlier matches of the suffix n-gram
    (:func:`.ngram.lookup_continuations`) and go on as the decoder's drafting would. The row keeps
    the candidate the verifier accepts furthest. Replay only: it prices tree-like drafting from
    prompt lookup before anyone builds it (the decoders draft one candidate per row)."""
    if k < 1:
        raise ValueError(f"lookup_alternatives: k={k} must be >= 1")

    def policy(decoder, history, limit, answer, key, truth):
        first = decoder.model_free_draft(history, limit, answer, key)[0]
        cands = [first] if first else []
        lim = min(limit, decoder.max_draft_len) if decoder.chain_drafts else limit
        if k == 1 or not decoder.use_ngram:
            return cands, "candidates"
        for cont in lookup_continuations(history, decoder.ngram_n, decoder.ngram_min_n,
                                         min(lim, decoder.ngram_draft_len), k + 2):
            if len(cands) >= k:
                break
            if first[:len(cont)] == cont:
                continue
            rest = (decoder.model_free_draft(history + cont, lim - len(cont), answer + cont, key)[0]
                    if lim > len(cont) else [])
            full = (cont + rest)[:lim]
            if full not in cands:
                cands.append(full)
        return cands, "candidates"

    policy.candidates = True
    policy.__name__ = f"lookup_alternatives({k})"
    return policy


def _agree(drafts: list[int], truth: list[int], stop_ids) -> int:
    """Length of the longest prefix of ``drafts`` the verifier accepts (a stop id matches a stop id:
    either way the row ends at that step)."""
    a = 0
    while a < len(drafts) and a < len(truth) and (drafts[a] == truth[a] or (drafts[a] in stop_ids and truth[a] in stop_ids)):
        a += 1
    return a


@dataclass
class ReplayResult:
    """Steps ``[(rows, width, cache length)]`` of one frame, and the drafted / accepted counts."""
    steps: list[tuple[int, int, int]]
    drafted: int
    accepted: int


def replay_frame(record: dict, decoder, policy: Policy = current_policy) -> ReplayResult:
    """Replay one frame record of ``decoder.trace`` under ``policy`` (see the module docstring).

    ``decoder`` supplies the drafting (``model_free_draft``), ``lookup_other_answers`` and the stop ids
    (``decoder.llm.prompt.stop_ids``), as in the decoder that recorded the trace.
    """
    stop_ids = set(decoder.llm.prompt.stop_ids)
    multi = getattr(policy, "candidates", False)  # the policy returns a list of candidate drafts
    queries, keys, budgets = record["queries"], record["keys"], record["budgets"]
    answers, ended = record["answers"], record["ended"]
    cut_from = {int(r): x for r, x in record.get("cut_from", {}).items()}
    n = len(queries)
    stop = next(iter(stop_ids))
    # the greedy ids each row produced: its answer and its stop token, or the ids the stop rule cut
    truth = [cut_from[r] if ended[r] == "rule" else answers[r] + ([stop] if ended[r] == "stop" else [])
             for r in range(n)]
    produced = [0] * n
    out: list[list[int]] = [[] for _ in range(n)]
    first = record["steps"][0] if record["steps"] else None
    cache_len = first[2] - first[1] if first else 0  # entries before the first verify step

    def take(r: int, k: int) -> None:
        for _ in range(k):
            if produced[r] >= len(truth[r]):
                return
            produced[r] += 1
            if produced[r] == len(truth[r]) and ended[r] != "budget":
                out[r] = list(answers[r])  # stopped (its stop token), or cut by the rule
                return
            out[r].append(truth[r][produced[r] - 1])

    for r in range(n):
        if budgets[r] > 0:
            take(r, 1)  # the prefill's greedy token
    steps, drafted, accepted = [], 0, 0
    while True:
        active = [r for r in range(n) if produced[r] < len(truth[r])]
        if not active:
            break
        rows = []
        for r in active:
            limit = budgets[r] - len(out[r]) - 1
            others = [t for o in range(n) if o != r for t in out[o]] if decoder.lookup_other_answers else []
            history = record["context"] + others + queries[r] + out[r]
            drafts = policy(decoder, history, limit, out[r], keys[r], truth[r][produced[r]:])[0] if limit > 0 else []
            # one candidate per verify row: a plain policy's draft, or a candidates policy's list
            rows.append([list(x) for x in drafts] if multi else [list(drafts)])
        width = 1 + max((len(x) for c in rows for x in c), default=0)
        cache_len += width
        steps.append((sum(max(1, len(c)) for c in rows), width, cache_len))
        for r, cands in zip(active, rows):
            a = max((_agree(x, truth[r][produced[r]:], stop_ids) for x in cands), default=0)
            drafted, accepted = drafted + sum(len(x) for x in cands), accepted + a
            take(r, a + 1)
    return ReplayResult(steps, drafted, accepted)


def check_trace(trace: list[dict], decoder) -> list[str]:
    """Frames whose replay under the decoder's own policy differs from the recorded steps (empty: faithful)."""
    bad = []
    for i, record in enumerate(trace):
        if record.get("draft_heads"):
            bad.append(f"frame {i}: drafted by trained heads, whose guesses come from the model's hidden states; "
                       "a model-free replay cannot reproduce them (record the trace without draft_heads)")
            continue
        got = [(a, w) for a, w, _ in replay_frame(record, decoder).steps]
        want = [(int(s[0]), int(s[1])) for s in record["steps"]]
        if got != want:
            bad.append(f"frame {i}: recorded {len(want)} steps, replayed {len(got)}")
    return bad


@dataclass
class StepCost:
    """Seconds of one verify forward: ``fixed + per_row * rows + per_position * rows * width +
    per_entry * rows * width * cache_len / 1000`` (least squares on measured steps)."""
    fixed: float
    per_row: float
    per_position: float
    per_entry: float
    r2: float
    measured_s: float

    def __call__(self, rows: int, width: int, cache_len: int) -> float:
        return (self.fixed + self.per_row * rows + self.per_position * rows * width
                + self.per_entry * rows * width * cache_len / 1000.0)


def fit_step_cost(trace: list[dict]) -> StepCost:
    """Fit :class:`StepCost` on every recorded verify forward of ``trace``."""
    steps = np.array([s for record in trace for s in record["steps"]], dtype=float)
    if len(steps) < 4:
        raise ValueError(f"fit_step_cost: {len(steps)} verify steps in the trace; need at least 4")
    rows, width, cache_len, seconds = steps.T
    x = np.stack([np.ones_like(rows), rows, rows * width, rows * width * cache_len / 1000.0], 1)
    coef, *_ = np.linalg.lstsq(x, seconds, rcond=None)
    fit = x @ coef
    r2 = 1.0 - float(((seconds - fit) ** 2).sum() / max(((seconds - seconds.mean()) ** 2).sum(), 1e-12))
    return StepCost(*map(float, coef), r2=r2, measured_s=float(seconds.sum()))


def compare_policies(trace: list[dict], decoder, policies: dict[str, Policy], cost: StepCost | None = None) -> list[dict]:
    """One row per policy: verify steps, fed positions, drafted / accepted tokens and the modelled
    verify seconds over the trace's frames, with the ratio to the first policy's seconds."""
    cost = cost or fit_step_cost(trace)
    rows = []
    for name, policy in policies.items():
        results = [replay_frame(record, decoder, policy) for record in trace]
        steps = [s for r in results for s in r.steps]
        rows.append(dict(policy=name, steps=len(steps), positions=sum(a * w for a, w, _ in steps),
                         drafted=sum(r.drafted for r in results), accepted=sum(r.accepted for r in results),
                         model_s=sum(cost(*s) for s in steps)))
    for row in rows:
        row["speedup_vs_first"] = rows[0]["model_s"] / row["model_s"] if row["model_s"] else float("nan")
    return rows

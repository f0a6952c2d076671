"""N-gram (prompt lookup) drafting.

Prompt lookup decoding (Saxena, 2023, "Prompt Lookup Decoding",
github.com/apoorvumang/prompt-lookup-decoding): when the output copies spans
of the input (DriveLM answers repeat the ``<c1,CAM_FRONT,160.3,92.1>`` tags of
their questions), the tokens that followed the latest earlier occurrence of
the current suffix n-gram are a free draft. No model runs at all.
"""
from __future__ import annotations

import re

_CTAG = re.compile(r"<c\d+,[^>]*>")
_NUMBER = re.compile(r"\d+(\.\d+)?")


def question_key(question: str) -> str:
    """The template of a question: c-tags and numbers replaced by placeholders.

    ``"What is the moving status of object <c1,CAM_FRONT,160.3,92.1>?"`` ->
    ``"What is the moving status of object <c>?"``: questions of one template
    share an answer template, so the datastore conditions its first drafts on it.
    """
    return _NUMBER.sub("#", _CTAG.sub("<c>", question.strip()))


def ngram_propose(tokens: list[int], max_ngram: int, min_ngram: int, max_tokens: int) -> list[int]:
    """Continuation of the longest, most recent earlier match of the suffix n-gram.

    For ``n`` from ``max_ngram`` down to ``min_ngram``: the last ``n`` tokens
    are searched for earlier in ``tokens`` (latest occurrence first, the
    suffix itself excluded); the first hit with a non-empty continuation
    returns up to ``max_tokens`` tokens that followed it.

    Args:
        tokens: the whole visible sequence (extra context, question, answer so far).
        max_ngram: longest n-gram tried (>= 1).
        min_ngram: shortest n-gram tried (1 <= min_ngram <= max_ngram).
        max_tokens: longest proposal.

    Returns:
        proposed ids (possibly empty: no match).
    """
    found = lookup_continuations(tokens, max_ngram, min_ngram, max_tokens, k=1)
    return found[0] if found else []


def lookup_continuations(tokens: list[int], max_ngram: int, min_ngram: int, max_tokens: int, k: int) -> list[list[int]]:
    """Up to ``k`` different continuations of earlier matches of the suffix n-gram, in
    :func:`ngram_propose`'s order (longest n-gram first, latest match first); the first one is
    :func:`ngram_propose`'s draft (which is this with ``k=1``). A continuation that is a prefix of one already taken is skipped.

    Args:
        tokens, max_ngram, min_ngram, max_tokens: as in :func:`ngram_propose`.
        k: most continuations returned.
    """
    if not 1 <= min_ngram <= max_ngram:
        raise ValueError(f"n-gram lookup: need 1 <= min_ngram ({min_ngram}) <= max_ngram ({max_ngram})")
    total, out = len(tokens), []
    if max_tokens <= 0 or k <= 0:
        return out
    for n in range(min(max_ngram, total - 1), min_ngram - 1, -1):
        suffix = tokens[total - n:]
        # A match starting at `start` (start + n < total) has a continuation; latest first.
        for start in range(total - n - 1, -1, -1):
            if tokens[start:start + n] == suffix:
                cont = tokens[start + n:start + n + max_tokens]
                if cont and not any(o[:len(cont)] == cont for o in out):
                    out.append(cont)
                    if len(out) == k:
                        return out
    return out


class NgramDatastore:
    """Retrieval drafts from a corpus of answers (an n-gram table, no model).

    REST (He et al., 2023, "REST: Retrieval-Based Speculative Decoding",
    arXiv 2311.08252) drafts from a datastore of existing text instead of a
    draft model. DriveLM answers are strongly templated ("There is a moving
    car to the front of the ego car.", "The ego vehicle should ..."), so the
    training split's answers, counted into an n-gram table, predict long runs
    of a fine-tuned model's greedy output. Drafts are only proposals: the full
    model verifies every token, so the output stays greedy-exact.

    The table maps every n-gram (``min_ngram <= n <= max_ngram``) of the corpus
    to the counts of the token that followed it. A draft chains, token by
    token, the most frequent successor of the longest suffix of the current
    sequence found in the table, and stops at the first suffix with no entry,
    at ``max_tokens``, or when the best successor holds less than
    ``min_share`` of the suffix's continuations (a guess too unsure to be worth
    a wider verify forward).

    Args:
        sequences: the corpus, as token id lists (e.g. tokenised answers).
        max_ngram: longest context looked up.
        min_ngram: shortest context looked up.
        min_share: lowest share of the best successor that is still drafted.
        end_id: appended to every sequence so drafts learn where answers stop
            (None: nothing appended).
        keys: one hashable key per sequence (None: no keys).

    Every sequence starts with the sentinel :attr:`BEGIN` (-1), so the first
    tokens of an answer are drafted too: call :meth:`propose` with
    ``[BEGIN] + answer_so_far``. With ``keys`` (e.g. :func:`question_key` of
    each answer's question) every sequence is also counted once more starting
    with its key instead of BEGIN; ``propose(answer, key=...)`` then drafts the
    first tokens from answers to questions of the same template, and falls
    back to BEGIN for a key never seen.

    Raises:
        ValueError: bad n-gram bounds or share.
    """

    BEGIN = -1

    def __init__(self, sequences: list[list[int]], max_ngram: int = 4, min_ngram: int = 2,
                 min_share: float = 0.3, end_id: int | None = None, keys: list | None = None) -> None:
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"NgramDatastore: need 1 <= min_ngram ({min_ngram}) <= max_ngram ({max_ngram})")
        if not 0.0 <= min_share <= 1.0:
            raise ValueError(f"NgramDatastore: min_share={min_share} must be in [0, 1]")
        self.max_ngram, self.min_ngram, self.min_share = int(max_ngram), int(min_ngram), float(min_share)
        if keys is not None and len(keys) != len(sequences):
            raise ValueError(f"NgramDatastore: {len(keys)} keys for {len(sequences)} sequences")
        counts: dict[tuple, dict[int, int]] = {}
        starts = [[self.BEGIN]] if keys is None else [[self.BEGIN], None]
        self.keys = set(keys or [])
        for j, body in enumerate(sequences):
            body = list(body) + ([end_id] if end_id is not None else [])
            for start in starts:
                self._count([keys[j]] if start is None else start, body, counts)
        # keep only the best successor and its share: drafting needs nothing else
        self.table: dict[tuple, tuple[int, float]] = {}
        for key, succ in counts.items():
            tok, c = max(succ.items(), key=lambda kv: kv[1])
            self.table[key] = (tok, c / sum(succ.values()))
        self.num_sequences = len(sequences)

    def _count(self, start: list, body: list[int], counts: dict) -> None:
        seq = start + body
        for i in range(1, len(seq)):
            for n in range(self.min_ngram, self.max_ngram + 1):
                if i - n < 0:
                    break
                succ = counts.setdefault(tuple(seq[i - n:i]), {})
                succ[seq[i]] = succ.get(seq[i], 0) + 1

    def __len__(self) -> int:
        return len(self.table)

    def next_token(self, tokens: list[int]) -> int | None:
        """Most frequent successor of the longest known suffix of ``tokens`` (None: no draft)."""
        for n in range(min(self.max_ngram, len(tokens)), self.min_ngram - 1, -1):
            hit = self.table.get(tuple(tokens[len(tokens) - n:]))
            if hit is not None:
                return hit[0] if hit[1] >= self.min_share else None
        return None

    def propose(self, tokens: list[int], max_tokens: int, stop_ids: tuple | list | set = (),
                key=None) -> list[int]:
        """Chain up to ``max_tokens`` successors after ``tokens`` (stops after a stop id).

        Args:
            tokens: the answer so far, starting with :attr:`BEGIN`; with ``key`` (a key
                given at construction) the BEGIN is replaced by it.
            max_tokens: longest draft.
            stop_ids: ids that end an answer; a draft never continues past one (it is
                included, since the model emitting it is worth verifying).

        Returns:
            proposed ids (possibly empty).
        """
        out: list[int] = []
        if key is not None and key in self.keys and tokens and tokens[0] == self.BEGIN:
            tokens = [key] + list(tokens[1:])
        seq = list(tokens[-self.max_ngram:])
        while len(out) < max_tokens:
            tok = self.next_token(seq)
            if tok is None:
                break
            out.append(tok)
            if tok in stop_ids:
                break
            seq = (seq + [tok])[-self.max_ngram:]
        return out

"""Packing several QA blocks of one frame after ONE shared prefix.

Every block attends to the prefix and causally to itself only (a
block-diagonal causal mask), and its position ids restart right after the
prefix, so each block sees exactly what it would see if it were alone after
the prefix; the prefix (visual tokens) is encoded once per frame instead of
once per question. This is the "packing with attention isolation" used for
multi-turn SFT (e.g. Krell et al., 2021, "Efficient Sequence Packing without
Cross-contamination"), with a shared prefix instead of separate documents.
"""
from __future__ import annotations

import torch

from .prompt import PromptTokens, block_ids

IGNORE_INDEX = -100


def build_packed_batch(tokenizer, tokens: PromptTokens, blocks: list[list[tuple[str, str]]],
                       num_prefix: int, pad_id: int, query_slots: int = 0,
                       query_context: list[list[bool]] | None = None) -> dict:
    """Token ids, mask, positions and labels of a packed batch.

    Layout of row ``b`` (right-padded to the longest row ``L``)::

        [prefix_ids (T0)] [P placeholder slots] [block 1] [block 2] ... [K query slots] [pad]

    The K query slots (``query_slots``, 0 = none: the layout and every tensor are those of a batch
    without them) are placeholders for learned query embeddings that read the blocks (e.g. the
    trajectory queries of ``BEVVLM(traj_placement='after_qa')``): they attend to the prefix, to the
    blocks flagged in ``query_context`` and causally to themselves, and no block attends to them,
    so the blocks and their labels are unchanged. Their position ids start right after the longest
    of the blocks they read (``T0 + P + max length``; ``T0 + P`` when they read none), so every key
    they see lies before them and the positions do not depend on the blocks they do not read.

    Args:
        tokenizer: the LLM tokenizer.
        tokens: :class:`PromptTokens` of the prompt layout.
        blocks: one entry per frame, each a non-empty list of
            ``(question, answer)`` pairs.
        num_prefix: number P of prefix embeddings the caller will splice in.
        pad_id: id written into placeholder slots and padding.
        query_slots: number K of query slots after each row's blocks.
        query_context: per frame, one flag per block: True = the query slots attend to it
            (None = every block).

    Returns:
        dict with
            ``input_ids`` ``[B, L]`` long,
            ``attention_mask_4d`` ``[B, 1, L, L]`` bool (True = may attend),
            ``position_ids`` ``[B, L]`` long,
            ``labels`` ``[B, L]`` long, ``-100`` except answer (+ end) tokens,
            ``prefix_slice`` ``(T0, T0 + P)`` of the placeholder slots,
            ``prefix_len`` ``T0 + P``;
        with ``query_slots > 0`` also ``query_index`` ``[B, K]`` long, the sequence index of each
        row's query slots.
    """
    if num_prefix < 0:
        raise ValueError(f"num_prefix must be >= 0, got {num_prefix}")
    if not blocks:
        raise ValueError("build_batch: got no frames")
    if query_slots < 0:
        raise ValueError(f"query_slots must be >= 0, got {query_slots}")
    if query_context is not None and [len(c) for c in query_context] != [len(f) for f in blocks]:
        raise ValueError(f"build_batch: query_context has {[len(c) for c in query_context]} flags per frame, "
                         f"the blocks {[len(f) for f in blocks]}; give one flag per block")
    text_prefix = list(tokens.prefix_ids)
    prefix_len = len(text_prefix) + num_prefix
    rows = []  # per row: (ids, labels, positions, block_ranges, ranges the query slots read)
    for b, frame_blocks in enumerate(blocks):
        if not frame_blocks:
            raise ValueError(f"build_batch: frame {b} has no (question, answer) blocks")
        ids = text_prefix + [pad_id] * num_prefix
        labels = [IGNORE_INDEX] * prefix_len
        positions = list(range(prefix_len))
        ranges = []
        for question, answer in frame_blocks:
            if answer is None:
                raise ValueError(f"build_batch: frame {b} question {question!r} has answer None; "
                                 "training blocks need an answer string")
            query, ans = block_ids(tokenizer, tokens, question, answer)
            start = len(ids)
            ids += query + ans
            labels += [IGNORE_INDEX] * len(query) + ans
            positions += list(range(prefix_len, prefix_len + len(query) + len(ans)))
            ranges.append((start, len(ids)))
        read = []  # (start, end) of the blocks the query slots read
        if query_slots:
            flags = query_context[b] if query_context is not None else [True] * len(ranges)
            read = [r for r, flag in zip(ranges, flags) if flag]
            first = prefix_len + max((end - start for start, end in read), default=0)
            ids += [pad_id] * query_slots
            labels += [IGNORE_INDEX] * query_slots
            positions += list(range(first, first + query_slots))
        rows.append((ids, labels, positions, ranges, read))

    batch_size = len(rows)
    length = max(len(r[0]) for r in rows)
    input_ids = torch.full((batch_size, length), pad_id, dtype=torch.long)
    labels = torch.full((batch_size, length), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((batch_size, length), dtype=torch.long)
    # Padding rows attend to themselves only, so no softmax row is empty.
    mask = torch.eye(length, dtype=torch.bool).repeat(batch_size, 1, 1)  # [B, L, L]
    causal = torch.ones(length, length, dtype=torch.bool).tril()  # [L, L]
    query_index = torch.zeros((batch_size, query_slots), dtype=torch.long)
    for b, (ids, lab, pos, ranges, read) in enumerate(rows):
        n = len(ids)
        input_ids[b, :n] = torch.tensor(ids)
        labels[b, :n] = torch.tensor(lab)
        position_ids[b, :n] = torch.tensor(pos)
        position_ids[b, n:] = torch.arange(pos[-1] + 1, pos[-1] + 1 + length - n)
        mask[b, :prefix_len, :prefix_len] = causal[:prefix_len, :prefix_len]
        for start, end in ranges:
            mask[b, start:end, :prefix_len] = True  # every block sees the whole prefix
            mask[b, start:end, start:end] = causal[: end - start, : end - start]
        if query_slots:
            q0 = n - query_slots
            query_index[b] = torch.arange(q0, n)
            mask[b, q0:n, :prefix_len] = True
            for start, end in read:
                mask[b, q0:n, start:end] = True
            mask[b, q0:n, q0:n] = causal[:query_slots, :query_slots]
    out = dict(
        input_ids=input_ids,
        attention_mask_4d=mask.unsqueeze(1),  # [B, 1, L, L]
        position_ids=position_ids,
        labels=labels,
        prefix_slice=(len(text_prefix), prefix_len),
        prefix_len=prefix_len,
    )
    if query_slots:
        out["query_index"] = query_index
    return out


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool mask (True = attend) -> additive float mask (0 / dtype min).

    transformers passes a 4D mask unchanged to the attention function; the
    eager path *adds* it to the scores, so a bool mask would be wrong there.
    The additive form is correct for both eager and SDPA.

    Args:
        mask: ``[B, 1, Lq, Lk]`` bool.
        dtype: dtype of the attention scores.

    Returns:
        ``[B, 1, Lq, Lk]`` tensor of ``dtype``.
    """
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return out.masked_fill(~mask, torch.finfo(dtype).min)

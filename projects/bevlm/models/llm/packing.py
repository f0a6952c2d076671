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
                       num_prefix: int, pad_id: int) -> dict:
    """Token ids, mask, positions and labels of a packed batch.

    Layout of row ``b`` (right-padded to the longest row ``L``)::

        [prefix_ids (T0)] [P placeholder slots] [block 1] [block 2] ... [pad]

    Args:
        tokenizer: the LLM tokenizer.
        tokens: :class:`PromptTokens` of the prompt layout.
        blocks: one entry per frame, each a non-empty list of
            ``(question, answer)`` pairs.
        num_prefix: number P of prefix embeddings the caller will splice in.
        pad_id: id written into placeholder slots and padding.

    Returns:
        dict with
            ``input_ids`` ``[B, L]`` long,
            ``attention_mask_4d`` ``[B, 1, L, L]`` bool (True = may attend),
            ``position_ids`` ``[B, L]`` long,
            ``labels`` ``[B, L]`` long, ``-100`` except answer (+ end) tokens,
            ``prefix_slice`` ``(T0, T0 + P)`` of the placeholder slots,
            ``prefix_len`` ``T0 + P``.
    """
    if num_prefix < 0:
        raise ValueError(f"num_prefix must be >= 0, got {num_prefix}")
    if not blocks:
        raise ValueError("build_batch: got no frames")
    text_prefix = list(tokens.prefix_ids)
    prefix_len = len(text_prefix) + num_prefix
    rows = []  # per row: (ids, labels, positions, block_ranges)
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
        rows.append((ids, labels, positions, ranges))

    batch_size = len(rows)
    length = max(len(r[0]) for r in rows)
    input_ids = torch.full((batch_size, length), pad_id, dtype=torch.long)
    labels = torch.full((batch_size, length), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((batch_size, length), dtype=torch.long)
    # Padding rows attend to themselves only, so no softmax row is empty.
    mask = torch.eye(length, dtype=torch.bool).repeat(batch_size, 1, 1)  # [B, L, L]
    causal = torch.ones(length, length, dtype=torch.bool).tril()  # [L, L]
    for b, (ids, lab, pos, ranges) in enumerate(rows):
        n = len(ids)
        input_ids[b, :n] = torch.tensor(ids)
        labels[b, :n] = torch.tensor(lab)
        position_ids[b, :n] = torch.tensor(pos)
        position_ids[b, n:] = torch.arange(pos[-1] + 1, pos[-1] + 1 + length - n)
        mask[b, :prefix_len, :prefix_len] = causal[:prefix_len, :prefix_len]
        for start, end in ranges:
            mask[b, start:end, :prefix_len] = True  # every block sees the whole prefix
            mask[b, start:end, start:end] = causal[: end - start, : end - start]
    return dict(
        input_ids=input_ids,
        attention_mask_4d=mask.unsqueeze(1),  # [B, 1, L, L]
        position_ids=position_ids,
        labels=labels,
        prefix_slice=(len(text_prefix), prefix_len),
        prefix_len=prefix_len,
    )


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

"""Trained draft heads: guesses of the tokens after the next one, from the verifier's own hidden state.

Model-free drafts (prompt lookup, the answer datastore) fail exactly where the context does not
settle the answer: at each such choice the batched decoder needs a forward for one token. A
Medusa-style head (Cai et al., 2024, "Medusa", arXiv 2401.10774) reads the last-layer hidden state
that the verify forward computes anyway and guesses the tokens after the one it chose: head ``k``
predicts the token ``k + 1`` places ahead (the LM head itself predicts the next one). The guesses
are only drafts: the full model verifies them like any other draft, so decoding stays greedy-exact
whatever the heads say, and a bad head costs speed, never an answer.

Each head is a residual block ``z = h + SiLU(W_k h + b_k)`` (``W_k``, ``b_k`` zero at the start:
every head starts as the LM head) followed by one output matrix shared by all heads. The output
covers only the tokens the training targets hold (``vocab``; the mini world's answers use a few
hundred of SmolLM2's 49152), which makes training on a CPU cheap; its rows start as the LM head's.

Training (:func:`head_training_data`, :func:`train_draft_heads`) is self-distillation: one
teacher-forced forward per training frame over its prefix and its QA in the format the model is
asked in, and head ``k`` at answer position ``t`` learns the model's own choice at ``t + k``.
:func:`save_draft_heads` / :func:`load_draft_heads` keep the heads in a safetensors file (no code
runs on load).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bevlm.models.llm.packing import IGNORE_INDEX
from bevlm.models.qa.policy import blocks_for_policy
from bevlm.utils import atomic_write

FORMAT = "bevlm_draft_heads/1"
_META_KEY = "bevlm_draft_heads"


class DraftHeads(nn.Module):
    """``num_heads`` residual blocks and a shared output over ``vocab``.

    Args:
        hidden_size: the LLM's width D.
        vocab: ``[V]`` token ids the heads can propose (sorted, unique).
        num_heads: K; head ``k`` (1-based) guesses the token ``k + 1`` places after the hidden state.
        out_weight: ``[V, D]`` initial output rows (the LM head's rows of ``vocab``); zeros when None.
    """

    def __init__(self, hidden_size: int, vocab: Tensor, num_heads: int, out_weight: Tensor | None = None) -> None:
        super().__init__()
        vocab = torch.as_tensor(vocab, dtype=torch.long).flatten()
        if num_heads < 1:
            raise ValueError(f"DraftHeads: num_heads={num_heads} must be >= 1")
        if vocab.numel() == 0:
            raise ValueError("DraftHeads: empty vocab (no training targets?)")
        if bool((vocab[1:] <= vocab[:-1]).any()):
            raise ValueError("DraftHeads: vocab must be sorted and unique")
        self.hidden_size, self.num_heads = int(hidden_size), int(num_heads)
        self.register_buffer("vocab", vocab, persistent=True)
        self.blocks = nn.ModuleList(nn.Linear(hidden_size, hidden_size) for _ in range(num_heads))
        for block in self.blocks:
            nn.init.zeros_(block.weight)
            nn.init.zeros_(block.bias)
        self.out = nn.Linear(hidden_size, vocab.numel(), bias=False)
        with torch.no_grad():
            if out_weight is None:
                self.out.weight.zero_()
            else:
                if tuple(out_weight.shape) != (vocab.numel(), hidden_size):
                    raise ValueError(f"DraftHeads: out_weight has shape {tuple(out_weight.shape)}, expected "
                                     f"({vocab.numel()}, {hidden_size})")
                self.out.weight.copy_(out_weight)

    def forward(self, hidden: Tensor) -> Tensor:
        """``[..., D]`` hidden states -> ``[..., K, V]`` logits over ``vocab``."""
        hidden = hidden.to(self.out.weight.dtype)
        z = torch.stack([hidden + F.silu(block(hidden)) for block in self.blocks], dim=-2)  # [..., K, D]
        return self.out(z)

    @torch.no_grad()
    def propose(self, hidden: Tensor, limit: int, min_prob: float = 0.0, stop_ids=()) -> list[int]:
        """Token ids guessed after the next token, for one ``[D]`` hidden state: head by head while
        each guess's probability is at least ``min_prob``, at most ``limit``, ending at a stop id."""
        if limit <= 0:
            return []
        probs = torch.softmax(self(hidden[None]).float()[0, :limit], dim=-1)  # [k, V]
        best, idx = probs.max(-1)
        out: list[int] = []
        for p, i in zip(best.tolist(), idx.tolist()):
            if p < min_prob:
                break
            out.append(int(self.vocab[i]))
            if out[-1] in stop_ids:
                break
        return out


@dataclass
class HeadData:
    """Self-distillation data: ``hidden [N, D]`` at answer positions, ``targets [N, K]`` (the model's
    own choice ``k`` places after each position's next token; -1 where that leaves the answer) and
    ``frame [N]`` (index of the training frame, for a held-out split by frame)."""

    hidden: Tensor
    targets: Tensor
    frame: Tensor


def future_targets(choices: Tensor, supervised: Tensor, num_heads: int) -> Tensor:
    """Targets of the heads at every position of one packed row.

    Args:
        choices: ``[L]`` the model's choice of the next token at each position (argmax).
        supervised: ``[L]`` bool, position ``t`` predicts an answer token (its label is not ignored).
        num_heads: K.

    Returns:
        ``[L, K]``: column ``k - 1`` holds ``choices[t + k]`` where positions ``t .. t + k`` are all
        supervised (the same answer), else -1.
    """
    length = choices.shape[0]
    run = torch.zeros(length + 1, dtype=torch.long)  # supervised positions in a row starting at t
    sup = supervised.long()
    for t in range(length - 1, -1, -1):
        run[t] = (run[t + 1] + 1) * sup[t]
    out = torch.full((length, num_heads), -1, dtype=torch.long)
    for k in range(1, num_heads + 1):
        ok = run[:length - k] > k
        out[:length - k, k - 1] = torch.where(ok, choices[k:], torch.full_like(choices[k:], -1))
    return out


@torch.no_grad()
def head_training_data(model: nn.Module, batches: list[dict], num_heads: int, log=print) -> HeadData:
    """Teacher-forced hidden states and self-distilled targets of training frames.

    Args:
        model: a trained :class:`BEVVLM` in eval mode.
        batches: one collated training frame each (``qa_mode='frame'``).
        num_heads: K.
        log: progress sink (one line every 10 frames).

    Returns:
        :class:`HeadData` of every position that predicts an answer token.
    """
    llm = model.llm
    head = llm.lm.get_output_embeddings()
    hiddens, targets, frames = [], [], []
    for n, batch in enumerate(batches):
        data = model.data_preprocessor(batch, False)
        imgs, samples = data["inputs"]["imgs"], data["data_samples"]
        vis, bev = model.visual_tokens(imgs, samples)
        prefix = model.build_prefix(vis, samples, bev)
        for i, sample in enumerate(samples):
            blocks = blocks_for_policy(sample.qa, model.qa_policy)
            if not blocks:
                continue
            packed = llm.build_batch([blocks], prefix.shape[1])
            hidden = llm._packed_hidden(packed, prefix[i:i + 1])[0]  # [L, D]
            labels = packed["labels"][0].cpu()
            supervised = torch.zeros(labels.shape[0], dtype=torch.bool)
            supervised[:-1] = labels[1:] != IGNORE_INDEX  # position t predicts label t + 1
            choices = torch.zeros(labels.shape[0], dtype=torch.long)
            choices[supervised] = head(hidden[supervised.to(hidden.device)]).argmax(-1).cpu()
            hidden = hidden.float().cpu()
            tgt = future_targets(choices, supervised, num_heads)
            keep = supervised & (tgt >= 0).any(-1)
            hiddens.append(hidden[keep].cpu())
            targets.append(tgt[keep])
            frames.append(torch.full((int(keep.sum()),), len(frames), dtype=torch.long))
        if (n + 1) % 10 == 0 or n + 1 == len(batches):
            log(f"draft heads: {n + 1}/{len(batches)} frames, {sum(len(x) for x in targets)} positions")
    if not hiddens:
        raise ValueError("head_training_data: the training frames hold no answers to learn from")
    return HeadData(torch.cat(hiddens), torch.cat(targets), torch.cat(frames))


def output_rows(lm: nn.Module, vocab: Tensor) -> Tensor:
    """``[V, D]`` rows of ``lm``'s float output head for ``vocab`` (float32 copies).

    Raises:
        ValueError: the output head holds no float ``[vocab, D]`` weight (e.g. a quantised head:
            train the heads on the float checkpoint).
    """
    weight = getattr(lm.get_output_embeddings(), "weight", None)
    if not (isinstance(weight, Tensor) and weight.is_floating_point() and weight.dim() == 2):
        raise ValueError("output_rows: the LLM's output head has no float weight; train draft heads on the float "
                         "checkpoint (before quantisation)")
    return weight.detach()[vocab].float().clone()


def train_draft_heads(data: HeadData, out_rows_fn, num_heads: int, epochs: int = 4, lr: float = 1e-3,
                      batch_size: int = 256, val_share: float = 0.2, seed: int = 0, log=print) -> tuple:
    """Fit :class:`DraftHeads` to self-distillation data; frames split into train / held-out.

    Args:
        data: :func:`head_training_data` output (its K >= ``num_heads``).
        out_rows_fn: ``vocab -> [V, D]`` initial output rows (:func:`output_rows` of the LLM).
        num_heads, epochs, lr, batch_size: the fit (AdamW, cosine decay).
        val_share: share of the frames held out for the accuracy report (0: none).
        seed: shuffling and the frame split.
        log: progress sink (one line per epoch).

    Returns:
        ``(heads, report)``: report holds per head the held-out top-1 accuracy against the
        model's own choice (``val_top1``), the same on the training positions (``train_top1``), and
        the number of positions and frames of each part.
    """
    if data.targets.shape[1] < num_heads:
        raise ValueError(f"train_draft_heads: data has targets for {data.targets.shape[1]} heads, asked {num_heads}")
    gen = torch.Generator().manual_seed(seed)
    targets = data.targets[:, :num_heads]
    frames = torch.unique(data.frame)
    perm = frames[torch.randperm(len(frames), generator=gen)]
    n_val = int(round(len(frames) * val_share)) if len(frames) > 1 else 0
    val_frames = perm[:n_val]
    is_val = torch.isin(data.frame, val_frames)
    vocab = torch.unique(targets[~is_val][targets[~is_val] >= 0])
    heads = DraftHeads(data.hidden.shape[1], vocab, num_heads, out_rows_fn(vocab))
    index = torch.full((int(targets.max()) + 1,), -1, dtype=torch.long)  # token id -> its row in vocab
    index[vocab] = torch.arange(len(vocab))
    local = torch.where(targets >= 0, index[targets.clamp(min=0)], torch.full_like(targets, -1))  # -1: not in vocab
    train_idx = torch.nonzero(~is_val).flatten()
    opt = torch.optim.AdamW(heads.parameters(), lr=lr, weight_decay=0.0)
    steps = max(1, epochs * math.ceil(len(train_idx) / batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    heads.train()
    for epoch in range(epochs):
        order = train_idx[torch.randperm(len(train_idx), generator=gen)]
        total, count = 0.0, 0
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            logits = heads(data.hidden[idx])  # [B, K, V]
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), local[idx].reshape(-1), ignore_index=-1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total, count = total + float(loss.detach()) * len(idx), count + len(idx)
        log(f"draft heads: epoch {epoch + 1}/{epochs}, loss {total / max(count, 1):.4f}")
    heads.eval()
    report = dict(num_heads=num_heads, vocab=int(len(vocab)), train_positions=int((~is_val).sum()),
                  val_positions=int(is_val.sum()), train_frames=int(len(frames) - n_val), val_frames=int(n_val),
                  train_top1=_top1(heads, data.hidden[~is_val], targets[~is_val], local[~is_val]),
                  val_top1=_top1(heads, data.hidden[is_val], targets[is_val], local[is_val]) if n_val else None)
    return heads, report


@torch.no_grad()
def _top1(heads: DraftHeads, hidden: Tensor, targets: Tensor, local: Tensor) -> list[float | None]:
    """Per head: among positions with a target (``targets >= 0``), the share where the head's argmax
    is it (a target outside the heads' vocab counts as a miss); None where no position has one."""
    pred = torch.cat([heads(hidden[i:i + 4096]).argmax(-1) for i in range(0, len(hidden), 4096)]) \
        if len(hidden) else torch.zeros((0, heads.num_heads), dtype=torch.long)
    out = []
    for k in range(heads.num_heads):
        has = targets[:, k] >= 0
        out.append(float((pred[has, k] == local[has, k]).float().mean()) if bool(has.any()) else None)
    return out


def save_draft_heads(heads: DraftHeads, path: str, info: dict | None = None) -> None:
    """Write ``heads`` to a safetensors file atomically (``info``: JSON-able provenance)."""
    from safetensors.torch import save

    meta = dict(format=FORMAT, hidden_size=heads.hidden_size, num_heads=heads.num_heads, info=dict(info or {}))
    tensors = {k: v.detach().contiguous().cpu() for k, v in heads.state_dict().items()}
    data = save(tensors, metadata={_META_KEY: json.dumps(meta), "format": "pt"})
    atomic_write(path, lambda f: f.write(data), binary=True)


def load_draft_heads(path: str, hidden_size: int | None = None, vocab_size: int | None = None) -> DraftHeads:
    """Read a file of :func:`save_draft_heads` (safetensors: no code runs).

    Args:
        path: the ``.safetensors`` file.
        hidden_size / vocab_size: the verifier's width and vocabulary size, checked when given.

    Raises:
        FileNotFoundError / ValueError: a missing file, a file of another format, or heads that do not
            fit the model, with the fix named.
    """
    from safetensors import safe_open

    fix = "train heads for this model with `python tools/train_draft_heads.py CONFIG CHECKPOINT --out PATH`"
    if not os.path.isfile(path):
        raise FileNotFoundError(f"speculative.draft_heads: {path} does not exist; {fix}")
    with safe_open(path, framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get(_META_KEY, "null") or "null")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"speculative.draft_heads: {path} has no '{_META_KEY}' metadata of format {FORMAT}: "
                             f"it was not written by save_draft_heads; {fix}")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if hidden_size is not None and meta["hidden_size"] != hidden_size:
        raise ValueError(f"speculative.draft_heads: {path} was trained for hidden size {meta['hidden_size']}, the "
                         f"LLM has {hidden_size}; {fix}")
    vocab = tensors.get("vocab")
    if vocab is None:
        raise ValueError(f"speculative.draft_heads: {path} lacks the key 'vocab'; {fix}")
    if vocab_size is not None and int(vocab.max()) >= vocab_size:
        raise ValueError(f"speculative.draft_heads: {path} proposes token id {int(vocab.max())}, the LLM's vocabulary "
                         f"has {vocab_size} ids; {fix}")
    heads = DraftHeads(meta["hidden_size"], vocab, meta["num_heads"])
    try:
        heads.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"speculative.draft_heads: {path} does not hold the tensors of {meta['num_heads']} heads "
                         f"({exc}); {fix}") from exc
    heads.info = meta.get("info", {})
    return heads.eval()


class HiddenTap:
    """Keeps the input of the LLM's output head from its latest call (the last-layer hidden states
    of the positions whose logits are computed); a context manager that removes its hook on exit."""

    def __init__(self, lm: nn.Module) -> None:
        self.hidden: Tensor | None = None
        self._handle = lm.get_output_embeddings().register_forward_hook(self._keep)

    def _keep(self, _module, inputs, _output) -> None:
        self.hidden = inputs[0].detach()

    def __enter__(self) -> "HiddenTap":
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

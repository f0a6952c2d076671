"""Teacher-forced fidelity of lossy inference variants (quantisation) to the float model.

Generated answers of a lossy variant diverge at the first changed token, so answer agreement and
DriveLM scores on a few frames are coarse. This measures the variant's next-token distribution
on the reference answers instead: every answer token of the evaluated frames (question + reference
answer, teacher-forced, the training format) is one comparison of the variant's logits with the
float model's, on the same prefix:

- ``top1_agreement``: share of answer tokens where both predict the same next token;
- ``kl``: mean KL(float || variant) of the next-token distributions (nats);
- ``ref_accuracy``: share where the variant's top-1 token is the reference token (the float
  model's own value is the ``baseline`` row);
- by the float model's own certainty, its margin (log-probability of its top-1 token minus that
  of its second) below / at or above :data:`MARGIN_NATS`: ``low_margin_share`` (share of the
  tokens where the float model is unsure), ``top1_agreement_low_margin`` /
  ``top1_agreement_high_margin``, and ``flips_at_low_margin``, the share of the variant's changed
  top-1 tokens that fall where the float model was unsure. A decoded answer follows its top-1
  tokens, so the few unsure positions (the end of a list, a number's next digit) are where a
  quantised model's answers part from the float model's.

Only variants that keep the model's prefix (quantisation, switches of decoding) are meaningful
here; pruning variants change the prefix and are refused.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from bevlm.registry import DATASETS
from .ptq import calibration_prefixes
from .variants import build_variant, variant_inputs


@torch.no_grad()
def answer_logits(model, frames) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits [N, V], targets [N])`` of every reference answer token of ``frames`` (``CalibFrame`` s)."""
    logits, targets = [], []
    for f in frames:
        batch = model.llm.build_batch([list(zip(f.questions, f.answers))], f.prefix.shape[1])
        lg, tg = model.llm.answer_logits(batch, f.prefix)
        logits.append(lg.float())
        targets.append(tg)
    return torch.cat(logits), torch.cat(targets)


#: Margin (nats) of the float model's top-1 over its second token below which a position counts as unsure.
MARGIN_NATS = 1.0


def compare_logits(ref: torch.Tensor, new: torch.Tensor, targets: torch.Tensor,
                   margin_nats: float = MARGIN_NATS) -> dict:
    """The fidelity figures of ``new`` logits against ``ref`` (both ``[N, V]``); see the module doc."""
    kl = F.kl_div(new.log_softmax(-1), ref.log_softmax(-1), log_target=True, reduction="batchmean")
    same = new.argmax(-1) == ref.argmax(-1)
    top2 = ref.log_softmax(-1).topk(2, dim=-1).values  # [N, 2]
    low = (top2[:, 0] - top2[:, 1]) < margin_nats
    share = lambda mask: float(mask.float().mean()) if mask.numel() else None  # noqa: E731  (None: no such token)
    return dict(top1_agreement=share(same), kl=float(kl), ref_accuracy=share(new.argmax(-1) == targets),
                tokens=int(targets.numel()), low_margin_share=share(low),
                top1_agreement_low_margin=share(same[low]), top1_agreement_high_margin=share(same[~low]),
                flips_at_low_margin=share(low[~same]))


def run_fidelity(cfg, base, variants: dict[str, dict], frame_stride: int = 8, max_questions: int = 32,
                 calib_frames: int = 4, log=print) -> dict:
    """Fidelity of each variant to ``base`` on every ``frame_stride``-th test frame (whole QA graph).

    Returns:
        ``{"baseline": {...}, name: {...}}`` (see the module docstring).
    """
    init_default_scope("bevlm")
    for name, spec in variants.items():
        if spec.get("pruning") or spec.get("qa_policy"):
            raise ValueError(f"fidelity: variant {name!r} changes the prefix or the QA format "
                             "(pruning / qa_policy); compare it with tools/benchmark.py instead")
    ds_cfg = cfg.test_dataloader.dataset.to_dict()
    ds_cfg.update(qa_mode="frame", qa_select="all", queue_length=1, frame_stride=frame_stride, stream_skipped=False)
    dataset = DATASETS.build(ds_cfg)
    frames = calibration_prefixes(base, [pseudo_collate([dataset[i]]) for i in range(len(dataset))],
                                  max_questions=max_questions)
    ref, targets = answer_logits(base, frames)
    results = {"baseline": compare_logits(ref, ref, targets)}
    log(f"fidelity: {len(frames)} frames, {targets.numel()} answer tokens")
    calib, train_qa = variant_inputs(base, cfg, list(variants.values()), calib_frames)
    for name, spec in variants.items():
        model = build_variant(base, spec, calib, log=log, train_qa=train_qa)
        results[name] = compare_logits(ref, answer_logits(model, frames)[0], targets)
        log(f"  {name}: " + ", ".join(f"{k} {'-' if v is None else format(v, '.4g')}"
                                      for k, v in results[name].items()))
    return results


def markdown_table(results: dict) -> str:
    lines = [f"| variant | top-1 agreement | KL (nats) | reference accuracy | answer tokens | float model unsure "
             f"(margin < {MARGIN_NATS:g} nat) | agreement there / elsewhere | changed top-1 where unsure |",
             "|---|---|---|---|---|---|---|---|"]
    f = lambda x: "-" if x is None else f"{x:.4f}"  # noqa: E731
    lines += [f"| {n} | {f(r['top1_agreement'])} | {r['kl']:.4f} | {f(r['ref_accuracy'])} | {r['tokens']} | "
              f"{f(r.get('low_margin_share'))} | {f(r.get('top1_agreement_low_margin'))} / "
              f"{f(r.get('top1_agreement_high_margin'))} | {f(r.get('flips_at_low_margin'))} |"
              for n, r in results.items()]
    return "\n".join(lines)

"""bf16 LLM fidelity: the project's cast (``cast_llm_``, the ``llm_dtype`` variant switch) keeps
SmolLM2-135M's logits within a stated tolerance of fp32.

One teacher-forced forward over a fixed chat-formatted driving QA (system turn, scene, question,
reference answer: 97 tokens) in fp32 and in bf16. Measured on x86 CPU (torch 2.14, transformers
5.24, one thread): max |logit diff| 1.20 (logits span about +-39, std 6.5), mean |diff| 0.11, max
per-position KL(fp32 || bf16) 8.9e-3 nats, mean 1.3e-3, argmax agreement 96/97 (one near-tie
flips). The bounds below leave about 2.5-3x margin; a cast that does nothing fails the "bf16 actually ran" check, a cast that
breaks the model (wrong dtype handling of rotary buffers, fp16 overflow, scrambled weights) fails
the tolerance.
"""
import copy

import pytest
import torch

from bevlm.inference.variants import cast_llm_
from bevlm.models.llm.prompt import block_ids

pytestmark = pytest.mark.slow

SCENE = "A red car is parked ahead on the right. A pedestrian waits at the crosswalk on the left."
QUESTION = "What should the ego vehicle do at the crosswalk?"
ANSWER = ("The ego vehicle should slow down and stop before the crosswalk, let the pedestrian cross, "
          "and then continue straight while keeping a safe distance from the parked red car.")

MAX_ABS_LOGIT_DIFF = 3.0  # measured 1.20
MEAN_ABS_LOGIT_DIFF = 0.3  # measured 0.11
MAX_KL = 0.03  # nats, measured 8.9e-3
MEAN_KL = 0.004  # nats, measured 1.3e-3
MIN_ARGMAX_AGREEMENT = 0.95  # measured 96/97 = 0.99
MIN_MAX_ABS_LOGIT_DIFF = 1e-2  # bf16 arithmetic really ran (measured 1.20; fp32 vs fp32 is 0)


def _sequence(llm) -> list[int]:
    tok = llm.tokenizer
    scene = tok(SCENE, add_special_tokens=False)["input_ids"]
    query, answer = block_ids(tok, llm.prompt, QUESTION, ANSWER)
    return list(llm.prompt.prefix_ids) + list(scene) + list(query) + list(answer)


@torch.no_grad()
def _logits(llm, ids: list[int]) -> torch.Tensor:
    return llm.lm(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()  # [L, V]


def test_bf16_cast_logits_within_tolerance_of_fp32(smollm2_fp32):
    ids = _sequence(smollm2_fp32)
    assert 60 <= len(ids) <= 100, len(ids)
    ref = _logits(smollm2_fp32, ids)
    low_llm = cast_llm_(copy.deepcopy(smollm2_fp32), "bfloat16")
    assert {p.dtype for p in low_llm.parameters()} == {torch.bfloat16}
    low = _logits(low_llm, ids)

    diff = (ref - low).abs()
    log_p, log_q = ref.log_softmax(-1), low.log_softmax(-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)  # [L] KL(fp32 || bf16) per position
    agree = (ref.argmax(-1) == low.argmax(-1)).float().mean().item()
    measured = dict(max_abs=diff.max().item(), mean_abs=diff.mean().item(), max_kl=kl.max().item(),
                    mean_kl=kl.mean().item(), agree=agree)
    assert measured["max_abs"] >= MIN_MAX_ABS_LOGIT_DIFF, measured
    assert measured["max_abs"] <= MAX_ABS_LOGIT_DIFF, measured
    assert measured["mean_abs"] <= MEAN_ABS_LOGIT_DIFF, measured
    assert measured["max_kl"] <= MAX_KL, measured
    assert measured["mean_kl"] <= MEAN_KL, measured
    assert agree >= MIN_ARGMAX_AGREEMENT, measured
    # the fp32 model is untouched by the cast of its copy
    assert {p.dtype for p in smollm2_fp32.parameters()} == {torch.float32}

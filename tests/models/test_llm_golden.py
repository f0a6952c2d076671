"""Golden greedy tokens and logits of the real default LLM through the project's wrapper.

``tests/data/smollm2_golden.json`` was written once by ``tests/data/make_golden_smollm2.py``
(prompt, library versions and machine are stored in the file). A stubbed or broken loader,
prompt layout, prefix cache or decoder changes the tokens. Tokens compare exactly; logits
within ``RTOL`` relative: fp32 sums reordered by another x86 CPU (AVX2 vs AVX-512) or thread
count stay far inside it, and no golden token sits on a near tie (smallest top-1 / top-2
logit margin of the 16 steps: 0.14 on a logit of 28.6, ~5e-3 relative).
"""
import importlib.util
import json
import os

import pytest
import torch

from tests.paths import DATA_DIR

pytestmark = pytest.mark.slow

GOLDEN = os.path.join(DATA_DIR, "smollm2_golden.json")
RTOL = 1e-3  # relative logit tolerance across x86 CPUs
REGENERATE = "if the change is deliberate, rerun tests/data/make_golden_smollm2.py"


def _maker():
    """The golden script as a module (its prompt layout and teacher-forced logits)."""
    spec = importlib.util.spec_from_file_location("make_golden_smollm2",
                                                  os.path.join(DATA_DIR, "make_golden_smollm2.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def golden():
    with open(GOLDEN) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def maker():
    return _maker()


def test_prompt_ids_are_the_golden_ones(smollm2_fp32, golden, maker):
    """Tokenizer + chat layout reproduce the stored prompt (else the other checks are moot)."""
    prefix_ids, scene_ids, query_ids = maker.sequence_ids(smollm2_fp32, golden["scene"], golden["question"])
    assert prefix_ids + scene_ids + query_ids == golden["prompt_ids"], REGENERATE


def test_greedy_tokens_equal_golden(smollm2_fp32, golden):
    llm = smollm2_fp32
    scene_ids = llm.tokenizer(golden["scene"], add_special_tokens=False)["input_ids"]
    prefix = llm.embed_tokens(torch.tensor([scene_ids])).detach()  # [1, P, 576]
    ids = llm.generate_ids(llm.prefill(prefix), golden["question"], max_new_tokens=golden["max_new_tokens"])
    assert ids == golden["generated_ids"], (llm.decode_ids(ids), golden["generated_text"], REGENERATE)
    assert llm.decode_ids(ids) == golden["generated_text"]


def test_teacher_forced_top_logits_equal_golden(smollm2_fp32, golden, maker):
    """At every golden step the logits of the stored top-5 ids match within RTOL, and the
    argmax is the golden token (so the stored top-1 is still the top-1)."""
    logits = maker.teacher_forced_logits(smollm2_fp32, golden["prompt_ids"], golden["generated_ids"])  # [N, V]
    top_ids = torch.tensor(golden["top_ids"])  # [N, 5]
    want = torch.tensor(golden["top_logits"])  # [N, 5]
    got = logits.gather(1, top_ids)
    torch.testing.assert_close(got, want, rtol=RTOL, atol=RTOL, msg=lambda m: f"{m}\n{REGENERATE}")
    assert logits.argmax(-1).tolist() == golden["generated_ids"]
    # the stored top-5 are the current top-5 up to order among near ties
    assert (logits.topk(5, dim=-1).values[:, -1] <= want[:, -1] * (1 + RTOL) + RTOL).all()


def test_cached_greedy_equals_hf_generate(smollm2_fp32, golden):
    """The wrapper's prefix-cached greedy decoder (scene given as prefix embeddings) equals
    ``transformers`` ``generate(do_sample=False)`` on the same token sequence, cut at the
    first stop token."""
    llm = smollm2_fp32
    question, n = golden["question"], golden["max_new_tokens"]
    scene_ids = llm.tokenizer(golden["scene"], add_special_tokens=False)["input_ids"]
    prefix = llm.embed_tokens(torch.tensor([scene_ids])).detach()
    ours = llm.generate_ids(llm.prefill(prefix), question, max_new_tokens=n)

    prompt = torch.tensor([golden["prompt_ids"]])
    with torch.no_grad():
        out = llm.lm.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                              max_new_tokens=n, pad_token_id=llm.pad_id)
    theirs = out[0, prompt.shape[1]:].tolist()
    cut = next((i for i, t in enumerate(theirs) if t in llm.prompt.stop_ids), len(theirs))
    assert ours == theirs[:cut]
    assert len(ours) == n  # the golden prompt decodes the full budget: the comparison covers n steps

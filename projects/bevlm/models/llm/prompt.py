"""The prompt layout shared by training and inference.

One key frame is one *prefix* shared by all its questions, followed by
independent QA *blocks*::

    [prefix text]  "<|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n"
    [P prefix embeddings supplied by the caller: visual (+ego) + trajectory query tokens]
    [block i]      "{question_i}" + query_suffix + "{answer_i}" + answer_suffix

with ``query_suffix = "<|im_end|>\\n<|im_start|>assistant\\n"`` and
``answer_suffix = "<|im_end|>"`` for ChatML. The pieces are cut out of the
tokenizer's own chat template (rendered around unique placeholder strings), so
any chat model gets its native format; tokenizers without a template get a
plain ``System:/User:/Assistant:`` format ending answers with the EOS token.

Each piece is tokenised on its own (``add_special_tokens=False``) and the ids
are concatenated, so the ids of a block are identical in a packed training
sequence, in a prefix-cached generation and in a no-cache generation.
"""
from __future__ import annotations

from dataclasses import dataclass

_Q_MARK = "\u27e6BEVLM-QUESTION\u27e7"
_A_MARK = "\u27e6BEVLM-ANSWER\u27e7"


@dataclass(frozen=True)
class PromptLayout:
    """Text pieces of the prompt around the prefix embeddings and QA blocks.

    Attributes:
        prefix_text: text before the P prefix embeddings (system turn and the
            opening of the user turn).
        query_suffix: text between a question and its answer (closes the user
            turn, opens the assistant turn).
        answer_suffix: text closing an answer (the end-of-turn token); it is
            part of the supervised answer, so the model learns to stop.
        from_chat_template: False when the plain fallback format is used.
    """

    prefix_text: str
    query_suffix: str
    answer_suffix: str
    from_chat_template: bool


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def chat_layout(tokenizer, system_prompt: str) -> PromptLayout:
    """Derive the prompt pieces from ``tokenizer``'s chat template.

    Args:
        tokenizer: a transformers tokenizer (``chat_template`` may be None).
        system_prompt: text of the system turn.

    Returns:
        :class:`PromptLayout`.
    """
    if getattr(tokenizer, "chat_template", None):
        try:
            gen = _render(tokenizer, [{"role": "system", "content": system_prompt},
                                      {"role": "user", "content": _Q_MARK}], add_generation_prompt=True)
            full = _render(tokenizer, [{"role": "system", "content": system_prompt},
                                       {"role": "user", "content": _Q_MARK},
                                       {"role": "assistant", "content": _A_MARK}], add_generation_prompt=False)
        except Exception:  # a template that rejects the system role etc.: use the fallback
            gen = full = ""
        if gen.count(_Q_MARK) == 1 and full.count(_A_MARK) == 1:
            prefix_text, query_suffix = gen.split(_Q_MARK)
            # Trailing newlines after the end-of-turn token belong to the next
            # turn, which never comes inside a block.
            answer_suffix = full.split(_A_MARK)[1].rstrip("\n")
            if answer_suffix:
                return PromptLayout(prefix_text, query_suffix, answer_suffix, from_chat_template=True)
    eos = tokenizer.eos_token
    if eos is None:
        raise ValueError("the LLM tokenizer has neither a usable chat template nor an eos_token; "
                         "set tokenizer.eos_token or use a chat model")
    return PromptLayout(f"System: {system_prompt}\nUser: ", "\nAssistant: ", eos, from_chat_template=False)


@dataclass(frozen=True)
class PromptTokens:
    """Token ids of the fixed prompt pieces.

    Attributes:
        prefix_ids: ids of ``layout.prefix_text``.
        query_suffix_ids: ids of ``layout.query_suffix``.
        answer_suffix_ids: ids of ``layout.answer_suffix``.
        stop_ids: ids that end generation (EOS and a one-token end of turn).
    """

    prefix_ids: tuple[int, ...]
    query_suffix_ids: tuple[int, ...]
    answer_suffix_ids: tuple[int, ...]
    stop_ids: frozenset[int]


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` without BOS/EOS added by the tokenizer."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_tokens(tokenizer, layout: PromptLayout) -> PromptTokens:
    """Tokenise the fixed pieces of ``layout`` once.

    Args:
        tokenizer: the tokenizer ``layout`` was derived from.
        layout: :class:`PromptLayout`.

    Returns:
        :class:`PromptTokens`.
    """
    answer_suffix_ids = tuple(encode(tokenizer, layout.answer_suffix))
    stop = set()
    if tokenizer.eos_token_id is not None:
        stop.add(int(tokenizer.eos_token_id))
    if len(answer_suffix_ids) == 1:
        stop.add(answer_suffix_ids[0])
    if not stop:
        raise ValueError("no stop token: the tokenizer has no eos_token_id and the end-of-turn text "
                         f"{layout.answer_suffix!r} is not a single token")
    return PromptTokens(
        prefix_ids=tuple(encode(tokenizer, layout.prefix_text)),
        query_suffix_ids=tuple(encode(tokenizer, layout.query_suffix)),
        answer_suffix_ids=answer_suffix_ids,
        stop_ids=frozenset(stop))


def block_ids(tokenizer, tokens: PromptTokens, question: str, answer: str | None) -> tuple[list[int], list[int]]:
    """Ids of one QA block, split into the query part and the answer part.

    Args:
        tokenizer: the tokenizer.
        tokens: :class:`PromptTokens` of the layout.
        question: question text.
        answer: answer text; None for generation (no answer part).

    Returns:
        ``(query_ids, answer_ids)``: ``question + query_suffix`` and
        ``answer + answer_suffix`` (empty list when ``answer`` is None).
    """
    query = encode(tokenizer, question) + list(tokens.query_suffix_ids)
    if answer is None:
        return query, []
    return query, encode(tokenizer, answer) + list(tokens.answer_suffix_ids)

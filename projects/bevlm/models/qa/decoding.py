"""Frame decoders: how the question blocks of one key frame are decoded from its prefix cache.

:func:`bevlm.models.qa.policy.answer_frame` turns a frame's QA into round texts and token
budgets and hands them to a :class:`FrameDecoder`; it never looks at decoding flags. A model
builds its decoder from ``test_cfg`` (:class:`bevlm.models.detectors.test_cfg.TestConfig`)
through ``bevlm.registry.TASK_UTILS`` by type name:

* :class:`GreedyBatchDecoder` (``batch_questions=True``): all rounds as one batch over the
  shared prefix cache;
* :class:`GreedySequentialDecoder` (``batch_questions=False``): one round after the other
  (batch 1);
* ``SelfSpeculativeDecoder`` (``speculative=dict(...)``): greedy-exact self-speculative
  decoding, registered by :mod:`bevlm.inference.speculative` (built by name, so the model
  layer does not import the inference toolkit).

Every implementation returns exactly the plain greedy ids of each round.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from bevlm.registry import TASK_UTILS

from ..llm import HFCausalLM, PrefixCache


@runtime_checkable
class FrameDecoder(Protocol):
    """Decodes the question blocks of one frame from the frame's prefix cache."""

    def decode(self, cache: PrefixCache, texts: list[str], budgets: list[int]) -> list[list[int]]:
        """Greedy answer ids of every question block.

        Args:
            cache: the frame's prefix cache (``llm.prefill(prefix)``); not mutated.
            texts: the question blocks, in the order they are asked.
            budgets: max new tokens of each block.

        Returns:
            One list of generated ids per block (stop token excluded).
        """
        ...


@TASK_UTILS.register_module()
class GreedyBatchDecoder:
    """All blocks of a frame decoded as one batch (same ids as one by one).

    Args:
        llm: the LLM wrapper (``generate_ids_batch``).
    """

    def __init__(self, llm: HFCausalLM) -> None:
        self.llm = llm

    def decode(self, cache: PrefixCache, texts: list[str], budgets: list[int]) -> list[list[int]]:
        """See :meth:`FrameDecoder.decode`."""
        return self.llm.generate_ids_batch(cache, texts, budgets)


@TASK_UTILS.register_module()
class GreedySequentialDecoder:
    """The blocks of a frame decoded one after the other, batch 1.

    Args:
        llm: the LLM wrapper (``generate_ids``).
    """

    def __init__(self, llm: HFCausalLM) -> None:
        self.llm = llm

    def decode(self, cache: PrefixCache, texts: list[str], budgets: list[int]) -> list[list[int]]:
        """See :meth:`FrameDecoder.decode`."""
        return [self.llm.generate_ids(cache, t, b) for t, b in zip(texts, budgets)]


def build_frame_decoder(llm: HFCausalLM, cfg: dict) -> FrameDecoder:
    """A frame decoder from its config, bound to ``llm``.

    Args:
        llm: the LLM wrapper the decoder runs.
        cfg: ``dict(type=<registered name>, **arguments)`` (``llm`` is added).

    Returns:
        The built decoder.

    Raises:
        TypeError: the built object has no ``decode`` method.
    """
    decoder = TASK_UTILS.build(dict(cfg, llm=llm))
    if not isinstance(decoder, FrameDecoder):
        raise TypeError(f"frame decoder {cfg.get('type')!r} built {type(decoder).__name__}, which has no "
                        "decode(cache, texts, budgets) method; register a FrameDecoder implementation")
    return decoder

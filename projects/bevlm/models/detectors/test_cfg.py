"""The test-time configuration of a :class:`~bevlm.models.detectors.BEVVLM` (``model.test_cfg``).

Everything that changes how a trained model is *run* (not what it learned) lives in one dict,
as ``test_cfg`` of mmdet3d detectors::

    model = dict(type="BEVVLM", ..., test_cfg=dict(
        max_new_tokens=32,                            # answer budget of every family ...
        family_max_new_tokens=dict(priority=96),      # ... unless overridden per family
        traj_max_new_tokens=80,                       # budget of the text trajectory
        repetition_stop=dict(max_period=8, min_repeats=3, min_span=12),  # or None: off
        answer_must_contain=dict(important_objects="<c"),  # or None: off
        answer_guard_loops=dict(max_period=24, min_repeats=3, min_span=12),  # or None: off
        answer_guard_recurrence=dict(ngram=12, max_count=2),  # or None: off
        batch_questions=True,                         # a frame's questions as one batch
        prefill_group_tokens=32,                      # batch: queries prefilled in length groups
        share_prompt_cache=False,                     # prompt-text KV prefilled once per model
        stream_temporal=True,                         # previous BEV cached per scene
        count_flops_frames=2,                         # FLOPs counted on the first N batches
        pruning=dict(encoder_layers=None, bev_keep_ratio=1.0, fastv_keep_ratio=1.0, fastv_layer=2),
        speculative=None,                             # or SelfSpeculativeDecoder arguments
        multiple_choice="generate",                   # or "likelihood": MC letters by option likelihood,
                                                      # "calibrated": likelihood minus the answer prior
        closed_set=None))                             # or dict(families=["collision_actions"]): those open
                                                      # questions answered by likelihood over the family's
                                                      # training answers

The QA-round policy is *not* here: it is also the training format, so it stays the model
argument ``qa_policy`` (one source of truth for training and testing).

Inference variants (:mod:`bevlm.inference.variants`) are overrides of this dict, applied
through :meth:`BEVVLM.set_test_cfg`, which validates them and rebuilds the derived test-time
components (stop rule, shared prompt cache switch, frame decoder).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..llm.batched_generation import GROUP_OVERHEAD_TOKENS
from ..pruning import PruningSetting
from ..qa.closed_set import check_closed_set


@dataclass(frozen=True)
class TestConfig:
    """Typed ``test_cfg`` of a BEVVLM (see the module docstring for an example).

    Args:
        max_new_tokens: default answer length budget (new tokens).
        family_max_new_tokens: per question family budgets (families of
            :mod:`bevlm.structures.qa_families`), e.g. long c-tag lists vs. "Yes."/"No.".
        traj_max_new_tokens: decode budget of the text trajectory (``traj_source='text'``).
        repetition_stop: loop stop rule of every decoded answer,
            ``dict(max_period, min_repeats, min_span)`` of
            :class:`bevlm.models.llm.stopping.RepetitionStop` (an answer that ends in a block
            repeated back to back stops there, one copy kept); None decodes to the budget.
        answer_must_contain: ``{family: text}``: an answer to a question of that family may not
            end (a stop token is passed over for the best other token) before it contains ``text``,
            e.g. ``dict(important_objects="<c")`` keeps the important-objects answer from ending
            before the sentence with the objects' IDs (:class:`bevlm.models.llm.stopping.EndGuard`);
            the answer still ends at its budget and under the loop rule. None: plain greedy.
        answer_guard_loops: with ``answer_must_contain``, the loop shape (``RepetitionStop``
            arguments) that a guarded answer lacking its text may not complete (the completing token
            is passed over for the best other one), so it cannot loop to its budget without the IDs
            either; None: not checked.
        answer_guard_recurrence: with ``answer_must_contain``, ``dict(ngram, max_count)``
            (:class:`bevlm.models.llm.stopping.Recurrence`): a guarded answer lacking its text may
            not write any ``ngram``-token phrase more than ``max_count`` times, wherever the copies
            are (loops that wander between a few phrases); None: not checked.
        batch_questions: decode all questions of a frame as one batch over the shared prefix
            cache (same greedy answers, much faster on bandwidth-bound CPUs).
        prefill_group_tokens: with ``batch_questions``, the questions are prefilled in groups of
            similar length (assembled into one left-padded batch cache, same answers) so that one
            long question does not pad every row; the number is one extra forward's cost in padded
            tokens (:func:`bevlm.models.llm.batched_generation.query_groups`: about 32 on a 2-core
            CPU; on a GPU, where padding is nearly free and forwards are not, a large value or None
            = one padded forward for all).
        share_prompt_cache: prefill the prompt text before the visual slot (system turn, chat
            markers) once per model and reuse its KV cache for every frame, so a frame's prefill
            runs only its own prefix embeddings (the one-time fill is not counted in any frame's
            time or FLOPs).
        stream_temporal: keep the previous BEV per scene (streaming) instead of recomputing the
            history queue.
        count_flops_frames: count FLOPs (FlopCounterMode) on the first N test batches.
        pruning: :class:`bevlm.models.pruning.PruningSetting` or a dict of its arguments:
            ``encoder_layers`` (BEV encoder early exit), ``bev_keep_ratio`` (drop visual tokens
            with low auxiliary occupancy), ``fastv_keep_ratio`` / ``fastv_layer`` (FastV-style
            pruning by LLM attention). Defaults change nothing.
        speculative: None (greedy decoding) or the arguments of
            :class:`bevlm.inference.speculative.SelfSpeculativeDecoder` but ``llm`` (e.g.
            ``dict(skip_layers=[], use_layer_skip=False, draft_len=4, batched=True)``, or with a
            low-precision copy of the same weights as the draft model
            ``dict(skip_layers=[], use_layer_skip=False, quant_draft='int4')``); it then decodes
            every frame (greedy-exact). Calibrated settings (a skip-set search, an
            answer datastore of the training split) are resolved by
            :func:`bevlm.inference.variants.apply_variant`.
        multiple_choice: how the official multiple-choice questions are answered: ``'generate'``
            decodes the letter like any answer; ``'likelihood'`` picks the option whose text the
            model finds likeliest as the answer to the open-ended stem
            (:mod:`bevlm.models.qa.multiple_choice`; nothing is decoded for them);
            ``'calibrated'`` scores the same options minus their log-probability given a
            content-free frame (the mean prefix of training frames, set by
            :meth:`BEVVLM.set_mc_prior`; :func:`bevlm.inference.variants.apply_variant` sets it).
        closed_set: None (every open question decoded) or ``dict(families=[...], scoring=
            'likelihood' | 'calibrated' | 'tag_calibrated', min_count=2, max_answers=32)``: the open questions of
            those families are answered with the candidate text the model finds likeliest, the
            candidates being the family's training answers (:mod:`bevlm.models.qa.closed_set`;
            set by :func:`bevlm.inference.variants.apply_variant`); ``'calibrated'`` subtracts
            each candidate's log-probability given the content-free frame, as multiple choice does;
            ``'tag_calibrated'`` its log-probability on the same frame with the question's c-tags
            replaced by a content-free object.
    """

    __test__ = False  # not a pytest test class despite its name

    max_new_tokens: int = 48
    family_max_new_tokens: dict = field(default_factory=dict)
    traj_max_new_tokens: int = 80
    repetition_stop: dict | None = None
    answer_must_contain: dict | None = None
    answer_guard_loops: dict | None = None
    answer_guard_recurrence: dict | None = None
    batch_questions: bool = True
    prefill_group_tokens: float | None = GROUP_OVERHEAD_TOKENS
    share_prompt_cache: bool = False
    stream_temporal: bool = True
    count_flops_frames: int = 2
    pruning: PruningSetting = field(default_factory=PruningSetting)
    speculative: dict | None = None
    multiple_choice: str = "generate"
    closed_set: dict | None = None

    def __post_init__(self) -> None:
        if self.multiple_choice not in ("generate", "likelihood", "calibrated"):
            raise ValueError(f"test_cfg.multiple_choice={self.multiple_choice!r} must be 'generate', 'likelihood' "
                             "or 'calibrated'")
        for name in ("max_new_tokens", "traj_max_new_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"test_cfg.{name}={value!r} must be an integer >= 1")
        g = self.prefill_group_tokens
        if g is not None and (isinstance(g, bool) or not isinstance(g, (int, float)) or not g >= 0):
            raise ValueError(f"test_cfg.prefill_group_tokens={g!r} must be a number >= 0 (tokens one extra prefill "
                             "forward costs) or None (one padded forward)")
        if not isinstance(self.count_flops_frames, int) or self.count_flops_frames < 0:
            raise ValueError(f"test_cfg.count_flops_frames={self.count_flops_frames!r} must be an integer >= 0")
        if not isinstance(self.family_max_new_tokens, dict):
            raise TypeError(f"test_cfg.family_max_new_tokens must be a dict {{family: budget}}, got "
                            f"{type(self.family_max_new_tokens).__name__}")
        for name in ("repetition_stop", "answer_must_contain", "answer_guard_loops", "answer_guard_recurrence",
                     "speculative"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, dict):
                raise TypeError(f"test_cfg.{name} must be a dict or None, got {type(value).__name__}")
        if isinstance(self.pruning, dict):
            object.__setattr__(self, "pruning", PruningSetting(**self.pruning))
        elif not isinstance(self.pruning, PruningSetting):
            raise TypeError(f"test_cfg.pruning must be a dict of PruningSetting arguments, got "
                            f"{type(self.pruning).__name__}")
        object.__setattr__(self, "family_max_new_tokens", dict(self.family_max_new_tokens))
        object.__setattr__(self, "closed_set", check_closed_set(self.closed_set))

    @property
    def calibrated(self) -> bool:
        """Whether some answers are scored against the content-free frame (multiple choice or
        closed-set families)."""
        return self.multiple_choice == "calibrated" or (self.closed_set or {}).get("scoring") == "calibrated"

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The valid keys of ``test_cfg``."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, cfg: dict | None) -> TestConfig:
        """Parse a ``test_cfg`` dict (None = every default).

        Args:
            cfg: ``test_cfg`` of the model config.

        Returns:
            The typed configuration.

        Raises:
            KeyError: a key that is not a field, with the list of valid keys.
        """
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - set(cls.keys()))
        if unknown:
            raise KeyError(f"unknown model.test_cfg keys {unknown}; valid keys: {list(cls.keys())}")
        return cls(**cfg)

    def merged(self, overrides: dict) -> TestConfig:
        """A copy with ``overrides`` applied (a ``pruning`` dict replaces the whole setting).

        Args:
            overrides: some ``test_cfg`` keys and their new values.

        Returns:
            The new, validated configuration.

        Raises:
            KeyError: an unknown key, with the list of valid keys.
        """
        return TestConfig.from_dict({**self.as_dict(), **dict(overrides)})

    def as_dict(self) -> dict:
        """The configuration as a ``test_cfg`` dict (``pruning`` as a dict)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["pruning"] = dataclasses.asdict(self.pruning)
        return out

    def decoder_cfg(self) -> dict:
        """Config of the frame decoder (``bevlm.registry.TASK_UTILS``) these settings select."""
        if self.speculative is not None:
            return dict(self.speculative, type="SelfSpeculativeDecoder")
        return dict(type="GreedyBatchDecoder" if self.batch_questions else "GreedySequentialDecoder")

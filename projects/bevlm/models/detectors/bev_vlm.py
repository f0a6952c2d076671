"""BEV-VLM: multi-view images -> BEVFormer-lite -> projector -> small LLM (+ trajectory tokens)."""
from __future__ import annotations

import time
from contextlib import nullcontext

import torch
from mmengine.model import BaseModel
from torch import nn

from bevlm.registry import MODELS
from bevlm.structures import EgoMotion, is_history_only
from bevlm.utils import Stopwatch, count_flops

from ..bev.multiview_encoder import encode_bev_queue, extract_multiview_feats
from ..heads.ego_text import EgoText
from ..heads.perception_text import PerceptionText
from ..heads.question_grounding import QuestionGrounding
from ..heads.plan_text import PlanText
from ..heads.text_trajectory import TRAJ_QUESTION, format_waypoints, parse_waypoints
from ..llm.packing import build_packed_batch
from ..llm.query_slots import extend_prefix, forward_train_with_queries, hidden_after_blocks
from ..llm.stopping import build_end_guard, build_stop_rule
from ..pruning import prefill_with_setting, prune_visual_tokens
from ..qa import (QAPolicy, answer_frame, apply_system_prompt, blocks_for_policy, build_frame_decoder,
                  OptionPrior, choose_by_likelihood, is_multiple_choice)
from ..qa.closed_set import choose_closed_answers
from ..qa.traj_context import check_context_policy, context_blocks, context_flags
from ..temporal_cache import TemporalBEVCache
from .test_cfg import TestConfig

VISION_MODES = ("bev", "camera", "blind")
TEMPORAL_FUSIONS = ("bev", "tokens")
TRAJ_SOURCES = ("head", "text")
TRAJ_PLACEMENTS = ("prefix", "after_qa")
#: Vision modules that ``frozen`` may name.
FREEZABLE = ("img_backbone", "img_neck", "bev_encoder", "aux_head", "camera_tokens")


@MODELS.register_module()
class BEVVLM(BaseModel):
    """Driving VLM that sees the scene through a BEV encoder.

    Prefix fed to the LLM (after the chat template's system/user header)::

        [visual tokens (N_vis)] [prompt tokens (0+)] [detections as text (0+)] [ego-status token (0/1)]
        [trajectory query tokens (K)] [the plan as text (0+)]

    followed by independent question/answer blocks. The trajectory head reads the last hidden
    states of the K query tokens, so waypoints come from one forward pass, without decoding.
    With ``traj_placement='after_qa'`` the K query tokens leave the prefix and follow the sample's
    perception and prediction blocks instead (:mod:`bevlm.models.qa.traj_context`).

    Args:
        llm: config of :class:`bevlm.models.llm.HFCausalLM`.
        projector: visual tokens -> LLM width (``out_dims`` defaults to the LLM width).
        traj_head: config of :class:`TrajectoryTokenHead` (``hidden_size`` filled from the LLM).
        vision: 'bev' (BEVFormer-lite), 'camera' (CLIP-style per-camera patch tokens from the
            same backbone, same token budget), or 'blind' (no visual tokens).
        img_backbone, img_neck: image feature extractor (unused when ``vision='blind'``).
        bev_encoder: config of :class:`BEVFormerLiteEncoder` (``vision='bev'``).
        camera_tokens: config of :class:`CameraPatchTokens` (``vision='camera'``).
        aux_head: optional dense BEV head trained from GT boxes (``vision='bev'``).
        use_ego_status: add the ego state (speed, acceleration, yaw rate) as one token.
        ego_status_dims: length of ``data_sample.ego_status``.
        qa_policy: config of :class:`bevlm.models.qa.policy.QAPolicy`: 'full' (one round per
            question, default), 'three_rounds' (perception / prediction / planning+behavior,
            several questions per structured round), 'single'; also the prompt template.
            One source of truth for both phases: training builds its blocks with it
            (``blocks_for_policy``) and testing asks and parses in the same format
            (``answer_frame``); change it on a built model only with :meth:`set_qa_policy`.
        test_cfg: test-time settings (decoding budgets, stop rule, batching, shared prompt
            cache, streaming, FLOP counting, pruning, speculative decoding), a dict of
            :class:`~bevlm.models.detectors.test_cfg.TestConfig` (unknown keys raise); change
            them on a built model only with :meth:`set_test_cfg`.
        temporal_fusion: how a BEV model uses the T frames of its queue: ``'bev'`` (BEVFormer:
            the previous BEV enters temporal self-attention, the LLM sees one frame's tokens) or
            ``'tokens'`` (image-level, the way VLMs take video: each frame's BEV is encoded
            alone and projected, and the LLM sees the T frames' tokens side by side, oldest
            first, each with a learned frame embedding; T x the visual tokens, no streaming).
        num_frames: T of ``temporal_fusion='tokens'`` (the queue length of train and test).
        traj_source: ``'head'`` (trajectory tokens + MLP, one forward; needs ``traj_head``) or
            ``'text'`` (the LLM is trained to write the waypoints as an extra QA block and they
            are decoded and parsed at test time, :mod:`bevlm.models.heads.text_trajectory`).
        traj_placement: where the trajectory query tokens of ``traj_source='head'`` sit:
            ``'prefix'`` (default: the end of the prefix, before every question; the planner sees
            the scene tokens only) or ``'after_qa'`` (after the sample's perception and prediction
            rounds, which then no longer see the queries: planning conditioned on those answers).
            ``'after_qa'`` trains the queries after the rounds with their ground-truth answers
            (teacher forcing: the perception / prediction rounds the training item holds, K more
            tokens per item, the LM loss of every round as without them) and, at test time, runs
            ONE forward over those rounds with the answers the model generated and the K queries,
            on the frame's prefix KV cache, after the questions are answered
            (:mod:`bevlm.models.llm.query_slots`). It needs a QA policy that keeps the stages apart
            (``'full'`` or ``'three_rounds'``).
        domain_adapters: multi-LoRA over data domains: ``{domain: adapter name}`` (the names
            among ``llm.adapter_names``); each sample's ``domain`` (set by its dataset) selects
            its adapter at train and test time. None = the LLM's active adapter for all.
        frozen: vision modules trained no further (subset of :data:`FREEZABLE`), e.g. the
            backbone, neck and BEV encoder a stage-1 perception checkpoint (``load_from``) trained;
            frozen modules get no gradients and stay in eval mode.
        num_prompt_tokens: learned prompt tokens (prompt tuning, Lester et al., EMNLP 2021) placed
            right after the visual tokens: frame-independent prefix tokens through which the
            answer style is fitted (a random vision side gives nearly constant visual tokens that
            act as such a prompt; a pretrained one does not). Initialised from the LLM's
            embeddings of random vocabulary tokens. 0 = none.
        det_head: config of the stage-1 :class:`CenterPointHead` (loaded with the stage-1 checkpoint,
            frozen), read by ``perception_text``; None = none.
        perception_text: keyword arguments of :class:`~bevlm.models.heads.perception_text.PerceptionText`:
            the frame's detections written as a fixed-length line of text (class, distance, c-tag)
            after the prompt tokens; None = none. Needs ``det_head`` and ``vision='bev'``.
        ego_text: keyword arguments of :class:`~bevlm.models.heads.ego_text.EgoText`: the ego status
            (speed, acceleration, yaw rate and their 3-s constant-turn-rate extrapolation) written as a
            fixed-length line of text after the detections; None = none.
        plan_text: keyword arguments of :class:`~bevlm.models.heads.plan_text.PlanText`: the trajectory
            head's plan, described in the answers' words (behaviour, safe actions), as a fixed-length
            line after the trajectory queries, so the questions are answered with the plan in view
            (in training written from the head's plan of a first pass without gradient); None = none.
            Needs ``traj_source='head'`` and ``traj_placement='prefix'``.
        question_grounding: keyword arguments of
            :class:`~bevlm.models.heads.question_grounding.QuestionGrounding`: each c-tag of a question
            followed by the ego-frame position of the detection it names ("(12 m ahead, 1 m left)"), in
            training and at test time; None = none. Needs ``perception_text`` (its detections).
        loss_lm_weight: weight of the language-modelling loss.
        data_preprocessor: config of :class:`BEVVLMDataPreprocessor`.
        init_cfg: mmengine initialisation config.
        **unknown: refused with a message; the test-time keys that used to be model arguments
            (``max_new_tokens``, ``pruning``, ...) name their place under ``test_cfg``.
    """

    def __init__(self, llm: dict, projector: dict | None, traj_head: dict | None = None,
                 vision: str = "bev", img_backbone: dict | None = None, img_neck: dict | None = None,
                 bev_encoder: dict | None = None, camera_tokens: dict | None = None,
                 aux_head: dict | None = None, use_ego_status: bool = True, ego_status_dims: int = 5,
                 loss_lm_weight: float = 1.0, qa_policy: dict | None = None,
                 temporal_fusion: str = "bev", num_frames: int = 1, traj_source: str = "head",
                 traj_placement: str = "prefix",
                 domain_adapters: dict | None = None, frozen: tuple | list = (), test_cfg: dict | None = None,
                 num_prompt_tokens: int = 0, det_head: dict | None = None, perception_text: dict | None = None,
                 ego_text: dict | None = None, plan_text: dict | None = None,
                 question_grounding: dict | None = None, data_preprocessor: dict | None = None, init_cfg: dict | None = None, **unknown) -> None:
        if unknown:
            moved = sorted(set(unknown) & set(TestConfig.keys()))
            if moved:
                raise TypeError(f"BEVVLM: {moved} are test-time settings: set them under model.test_cfg "
                                f"(e.g. model.test_cfg.{moved[0]}), not on the model")
            raise TypeError(f"BEVVLM: unknown arguments {sorted(unknown)}; fix the model config")
        if data_preprocessor is None:
            data_preprocessor = dict(type="BEVVLMDataPreprocessor")
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if vision not in VISION_MODES:
            raise ValueError(f"vision must be one of {VISION_MODES}, got {vision!r}")
        if temporal_fusion not in TEMPORAL_FUSIONS:
            raise ValueError(f"temporal_fusion must be one of {TEMPORAL_FUSIONS}, got {temporal_fusion!r}")
        if temporal_fusion == "tokens" and (vision != "bev" or num_frames < 1):
            raise ValueError(f"temporal_fusion='tokens' needs vision='bev' and num_frames >= 1 "
                             f"(got vision={vision!r}, num_frames={num_frames})")
        if traj_source not in TRAJ_SOURCES or (traj_source == "head" and traj_head is None):
            raise ValueError(f"traj_source must be one of {TRAJ_SOURCES} ('head' needs traj_head), got "
                             f"{traj_source!r} with traj_head={traj_head}")
        if traj_placement not in TRAJ_PLACEMENTS or (traj_placement == "after_qa" and traj_source != "head"):
            raise ValueError(f"traj_placement must be one of {TRAJ_PLACEMENTS} ('after_qa' places the trajectory "
                             f"head's query tokens: it needs traj_source='head'), got {traj_placement!r} with "
                             f"traj_source={traj_source!r}")
        self.traj_source = traj_source
        self.traj_placement = traj_placement
        self.domain_adapters = dict(domain_adapters) if domain_adapters else None
        self.vision = vision
        self.temporal_fusion = temporal_fusion
        self.num_frames = int(num_frames)
        self.llm = MODELS.build(llm)
        width = self.llm.hidden_size
        self.img_backbone = MODELS.build(img_backbone) if vision != "blind" else None
        self.img_neck = MODELS.build(img_neck) if vision != "blind" and img_neck else None
        self.bev_encoder = MODELS.build(bev_encoder) if vision == "bev" else None
        self.camera_tokens = MODELS.build(camera_tokens) if vision == "camera" else None
        self.aux_head = MODELS.build(aux_head) if vision == "bev" and aux_head else None
        self.projector = None
        if vision != "blind":
            projector = dict(projector)
            projector.setdefault("out_dims", width)
            self.projector = MODELS.build(projector)
        self.frame_embed = None
        if temporal_fusion == "tokens":
            if bev_encoder.get("use_temporal", True):
                raise ValueError("temporal_fusion='tokens' fuses frames in the LLM: set "
                                 "bev_encoder.use_temporal=False")
            self.frame_embed = nn.Parameter(torch.zeros(self.num_frames, width))  # [T, D]
            nn.init.normal_(self.frame_embed, std=0.02)
        self.prompt_embed = None
        if num_prompt_tokens < 0:
            raise ValueError(f"num_prompt_tokens must be >= 0, got {num_prompt_tokens}")
        if num_prompt_tokens:
            with torch.no_grad():
                vocab = self.llm.lm.get_input_embeddings().weight
                ids = torch.randint(0, vocab.shape[0], (num_prompt_tokens,))
                self.prompt_embed = nn.Parameter(vocab[ids].detach().float().clone())  # [K, D]
        self.det_head, self.perception_text = None, None
        if (det_head is None) != (perception_text is None):
            raise ValueError("BEVVLM: det_head and perception_text go together (the frozen stage-1 detection head "
                             "whose boxes perception_text writes into the prefix); set both or neither")
        if perception_text is not None:
            if vision != "bev":
                raise ValueError(f"BEVVLM: perception_text reads detections off the BEV; it needs vision='bev', "
                                 f"got {vision!r}")
            self.det_head = MODELS.build(det_head).requires_grad_(False).eval()
            self.perception_text = PerceptionText(**perception_text)
        self.question_grounding = None
        if question_grounding is not None:
            if self.perception_text is None:
                raise ValueError("BEVVLM: question_grounding reads the detections perception_text decodes; set "
                                 "det_head and perception_text too, or question_grounding=None")
            self.question_grounding = QuestionGrounding(**question_grounding)
        # parts that only a checkpoint gives (frozen, never trained here): a training's load_from must hold
        # them (bevlm.engine.checkpoint.check_required_weights), else a random head would write the text
        self.weights_from_checkpoint = ("det_head.",) if self.det_head is not None else ()
        self.ego_text = EgoText(**ego_text) if ego_text is not None else None
        self.ego_embed = nn.Sequential(nn.Linear(ego_status_dims, width), nn.GELU(),
                                       nn.Linear(width, width)) if use_ego_status else None
        self.traj_head = None
        if traj_head is not None:
            traj_head = dict(traj_head)
            traj_head.setdefault("hidden_size", width)
            prior = traj_head.get("ego_prior_dims", 0)
            if traj_head.get("kinematic_prior") is not None and (not use_ego_status or ego_status_dims < 5):
                raise ValueError(f"traj_head.kinematic_prior={traj_head['kinematic_prior']!r} extrapolates the ego "
                                 f"status ([vx, vy, ax, ay, yaw_rate]): it needs use_ego_status=True (got "
                                 f"{use_ego_status}) and ego_status_dims >= 5 (got {ego_status_dims}); for a model "
                                 "without ego status drop kinematic_prior")
            if prior and (not use_ego_status or prior != ego_status_dims):
                raise ValueError(f"traj_head.ego_prior_dims={prior} reads the ego status straight into the "
                                 f"trajectory: it needs use_ego_status=True (got {use_ego_status}) and "
                                 f"ego_prior_dims == ego_status_dims ({ego_status_dims}); for a model without ego "
                                 "status drop ego_prior_dims")
            self.traj_head = MODELS.build(traj_head)
        self.plan_text = None
        if plan_text is not None:
            if self.traj_head is None or traj_source != "head" or traj_placement != "prefix":
                raise ValueError(f"BEVVLM: plan_text writes the trajectory head's plan after its queries in the prefix; "
                                 f"it needs traj_head, traj_source='head' and traj_placement='prefix' (got traj_head="
                                 f"{'set' if self.traj_head is not None else None}, traj_source={traj_source!r}, "
                                 f"traj_placement={traj_placement!r}). Fix: drop model.plan_text or set those")
            self.plan_text = PlanText(**plan_text)
        self.loss_lm_weight = loss_lm_weight
        self.temporal_cache = TemporalBEVCache()
        if self.domain_adapters:
            unknown = set(self.domain_adapters.values()) - set(self.llm.adapter_names)
            if unknown:
                raise ValueError(f"domain_adapters names adapters {sorted(unknown)} that the LLM does not have "
                                 f"(llm.adapter_names={self.llm.adapter_names}); add them to llm.adapter_names")
        self.frozen = self._freeze(frozen)
        self.set_qa_policy(qa_policy)
        self._test_cfg = TestConfig()
        self.frame_decoder = None
        self.set_test_cfg(test_cfg or {})
        self._flop_calls = 0

    # ------------------------------------------------------------------ configuration
    def _freeze(self, names) -> tuple:
        """Freeze the named vision modules (e.g. those a stage-1 perception checkpoint trained):
        no gradients, and kept in eval mode (BatchNorm keeps its running statistics)."""
        names = tuple(names)
        for name in names:
            if name not in FREEZABLE or getattr(self, name, None) is None:
                raise ValueError(f"BEVVLM: frozen names {name!r}, which is not a vision module this model has; "
                                 f"choose among {[n for n in FREEZABLE if getattr(self, n, None) is not None]}")
            getattr(self, name).requires_grad_(False).eval()
        return names

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self.frozen:
            getattr(self, name).eval()
        if self.det_head is not None:  # frozen stage-1 head (perception_text)
            self.det_head.eval()
        return self

    @property
    def test_cfg(self) -> TestConfig:
        """The test-time settings (read-only; change them with :meth:`set_test_cfg`)."""
        return self._test_cfg

    def set_test_cfg(self, overrides: dict) -> TestConfig:
        """Override test-time settings and rebuild what derives from them: the one way to change
        how a built model is run (inference variants go through it).

        The LLM's loop stop rule, shared prompt-cache switch and query-prefill grouping and the frame decoder
        (greedy batched / greedy batch-1 / self-speculative, built by name from
        ``bevlm.registry.TASK_UTILS``) are rebuilt; pruning and budgets are read at predict time.

        Args:
            overrides: ``test_cfg`` keys and their new values (merged into the current ones;
                a ``pruning`` dict replaces the whole pruning setting).

        Returns:
            The new :class:`TestConfig`.

        Raises:
            KeyError: an unknown key (the message lists the valid ones).
            ValueError: ``speculative`` arguments the decoder does not take.
        """
        cfg = self._test_cfg.merged(overrides)
        decoder_cfg = cfg.decoder_cfg()
        try:
            decoder = build_frame_decoder(self.llm, decoder_cfg)
        except TypeError as err:
            if cfg.speculative is None:
                raise
            raise ValueError(f"model.test_cfg.speculative={cfg.speculative} is not a set of SelfSpeculativeDecoder "
                             f"arguments ({err}); give skip_layers (a list, [] for none) and decoder options; a "
                             "skip-set search or an answer datastore is resolved by an inference variant "
                             "(bevlm.inference.variants, tools/test.py --variant)") from err
        self.llm.stop_rule = build_stop_rule(cfg.repetition_stop)
        self.llm.end_guard = build_end_guard(cfg.answer_must_contain, cfg.answer_guard_loops,
                                             cfg.answer_guard_recurrence)
        self.llm.share_text_prefix = cfg.share_prompt_cache
        self.llm.prefill_group_tokens = cfg.prefill_group_tokens
        self.frame_decoder = decoder
        self._test_cfg = cfg
        return cfg

    def set_qa_policy(self, qa_policy: dict | None) -> QAPolicy:
        """Set the QA-round policy (training blocks and test-time rounds) and re-derive the LLM's
        prompt for its system turn.

        The policy is a training-time format choice too: change it on a trained model only to
        ask it in another format on purpose (e.g. a variant comparing formats).

        Args:
            qa_policy: :class:`QAPolicy` arguments (None = the default ``'full'`` policy).

        Returns:
            The new policy.
        """
        policy = QAPolicy(**(qa_policy or {}))
        if self.traj_placement == "after_qa":
            check_context_policy(policy)
        self.qa_policy = policy
        apply_system_prompt(self.llm, self.qa_policy.template)
        return self.qa_policy

    mc_prior: OptionPrior | None = None  # the content-free frame of calibrated multiple choice

    def set_mc_prior(self, prefix_embeds: torch.Tensor | None) -> None:
        """Set the content-free frame that ``test_cfg.multiple_choice='calibrated'`` scores the
        options against (``[1, P, D]`` prefix embeddings of the model's prefix layout, e.g. the
        mean prefix of training frames: :func:`bevlm.inference.variants.mc_prior_prefix`); None
        clears it. Set it again after changing the LLM's weights (its scores are remembered)."""
        self.mc_prior = None if prefix_embeds is None else OptionPrior(self.llm, prefix_embeds)

    closed_answers: dict | None = None  # {family: candidate texts} of test_cfg.closed_set

    def set_closed_answers(self, answers: dict | None) -> None:
        """Set the candidate answers of ``test_cfg.closed_set``'s families (``{family: [text,
        ...]}``, e.g. :func:`bevlm.models.qa.closed_set.closed_set_answers` of the training QA;
        :func:`bevlm.inference.variants.apply_variant` sets them); None clears them."""
        self.closed_answers = None if answers is None else {f: list(t) for f, t in answers.items()}

    def _closed_candidates(self, test_cfg) -> dict:
        fams = test_cfg.closed_set["families"]
        missing = [f for f in fams if f not in (self.closed_answers or {})]
        if missing:
            raise RuntimeError(f"test_cfg.closed_set answers families {fams} from candidate sets, and none is set for "
                               f"{missing}. Fix: test through tools/test.py (it collects them from the training "
                               f"QA), call bevlm.inference.variants.apply_variant, or call model.set_closed_answers")
        return {f: self.closed_answers[f] for f in fams}

    def _option_prior(self) -> OptionPrior:
        if self.mc_prior is None:
            raise RuntimeError("calibrated scoring (test_cfg.multiple_choice or closed_set) needs the content-free frame its scores "
                               "are calibrated against, and none is set. Fix: test through tools/test.py (it sets "
                               "the mean prefix of training frames), call bevlm.inference.variants.apply_variant, "
                               "or call model.set_mc_prior(prefix_embeds)")
        return self.mc_prior

    def reset_test_state(self) -> None:
        """Forget the streamed temporal state and restart FLOP counting (a fresh test run)."""
        self.temporal_cache.reset()
        self._flop_calls = 0

    # ------------------------------------------------------------------ vision
    def extract_img_feats(self, imgs: torch.Tensor) -> list[torch.Tensor]:
        """``imgs [B, N, 3, H, W]`` -> multi-level features, each ``[B, N, C, h, w]``."""
        return extract_multiview_feats(self.img_backbone, self.img_neck, imgs)

    def _frame_bev(self, imgs_t, ego2img_t, img_shape, prev_bev, motion, num_layers=None):
        feats = self.extract_img_feats(imgs_t)
        if num_layers is None and not self.training:
            num_layers = self.test_cfg.pruning.encoder_layers  # early exit (test time only)
        return self.bev_encoder(feats, ego2img_t, img_shape, prev_bev=prev_bev, ego_motion=motion,
                                num_layers=num_layers)

    def encode_bev(self, imgs: torch.Tensor, data_samples: list, streaming: bool = False) -> torch.Tensor:
        """BEV of the current frame ``[B, Hb*Wb, C]``.

        Training / queue mode: the T-1 history frames run under ``no_grad`` (as BEVFormer) and
        pass their BEV forward, warped by ego motion. Streaming mode (test, T=1): the previous BEV
        comes from :class:`TemporalBEVCache`, valid only for the sample's true previous frame.
        """
        if not streaming:
            return encode_bev_queue(self._frame_bev, imgs, data_samples)
        b = imgs.shape[0]
        img_shape = tuple(data_samples[0].img_shape)
        ego2img = torch.stack([s.ego2img[-1] for s in data_samples]).to(imgs)  # [B, N, 4, 4]
        motions = [s.ego_motion[-1] for s in data_samples]
        prev_bev, motion = None, EgoMotion.stack(motions)
        motion.valid = torch.zeros(b, dtype=torch.bool)
        if self.bev_encoder.use_temporal:
            prev_bev, motion = self.temporal_cache.lookup(
                [s.scene_token for s in data_samples], [s.prev_token for s in data_samples], motions)
        bev = self._frame_bev(imgs[:, -1], ego2img, img_shape, prev_bev, motion.to(imgs.device))
        self.temporal_cache.update([s.scene_token for s in data_samples], [s.token for s in data_samples], bev)
        return bev

    @torch.no_grad()
    def fill_temporal_cache(self, imgs: torch.Tensor, data_samples: list) -> int:
        """Streaming on a subsampled split: put the previous frame's BEV into the cache.

        When the test split skips frames (``frame_stride > 1``) the previous key frame was never
        streamed, so the cache misses. With a queue of T >= 2 the dataset still loads that
        frame: its BEV (computed without its own history, as the oldest frame of a training
        queue) is stored as the scene's latest, and the streamed frame then sees exactly what a
        T=2 queue gives it. Returns the number of samples filled.
        """
        if imgs.shape[1] < 2 or self.bev_encoder is None or not self.bev_encoder.use_temporal:
            return 0
        miss = [i for i, s in enumerate(data_samples)
                if s.prev_token and bool(s.queue_valid[-2]) and not self.temporal_cache.holds(s.scene_token, s.prev_token)]
        if not miss:
            return 0
        img_shape = tuple(data_samples[0].img_shape)
        ego2img = torch.stack([data_samples[i].ego2img[-2] for i in miss]).to(imgs)  # [m, N, 4, 4]
        bev = self._frame_bev(imgs[miss, -2], ego2img, img_shape, None, None)  # [m, Hb*Wb, C]
        self.temporal_cache.update([data_samples[i].scene_token for i in miss],
                                   [data_samples[i].prev_token for i in miss], bev)
        return len(miss)

    def visual_tokens(self, imgs, data_samples, streaming=False):
        """Visual tokens ``[B, N_vis, D]`` (None for the blind baseline) and the BEV (or None)."""
        if self.vision == "blind":
            return None, None
        if self.vision == "camera":
            feats = self.extract_img_feats(imgs[:, -1])
            return self.projector(self.camera_tokens(feats)), None
        if self.temporal_fusion == "tokens":
            return self.stacked_frame_tokens(imgs, data_samples)
        bev = self.encode_bev(imgs, data_samples, streaming=streaming)
        return self.projector(bev), bev

    def stacked_frame_tokens(self, imgs, data_samples):
        """Image-level temporal input: ``[B, T*N_vis, D]`` tokens of the T frames and the last BEV.

        Every frame is encoded alone (no temporal self-attention); the encoder runs under
        ``no_grad`` for history frames as in the BEV-level path, while the projector and the frame
        embedding of every frame are trained. Padding frames of a short queue (scene start,
        ``queue_valid`` False) give zero tokens.
        """
        b, t = imgs.shape[:2]
        if t != self.num_frames:
            raise ValueError(f"temporal_fusion='tokens' with num_frames={self.num_frames} got a queue of {t} "
                             f"frames; set queue_length={self.num_frames} in the train and test datasets")
        img_shape = tuple(data_samples[0].img_shape)
        ego2img = torch.stack([s.ego2img for s in data_samples]).to(imgs)  # [B, T, N, 4, 4]
        qvalid = torch.stack([s.queue_valid for s in data_samples]).to(imgs.device)  # [B, T]
        tokens, bev = [], None
        for step in range(t):
            with torch.set_grad_enabled(step == t - 1 and torch.is_grad_enabled()):
                bev = self._frame_bev(imgs[:, step], ego2img[:, step], img_shape, None, None)
            vis = self.projector(bev) + self.frame_embed[step]  # [B, N_vis, D]
            tokens.append(vis * qvalid[:, step, None, None].to(vis.dtype))
        return torch.cat(tokens, dim=1), bev  # [B, T*N_vis, D], [B, Hb*Wb, C]

    def build_prefix(self, vis: torch.Tensor | None, data_samples: list, bev: torch.Tensor | None = None,
                     with_plan: bool = True) -> torch.Tensor:
        """Prefix embeddings ``[B, P, D]`` = visual tokens, prompt tokens, the detections as text
        (``perception_text``: read off ``bev``, the current frame's unpruned BEV), the ego status as
        text (``ego_text``), ego token,
        trajectory queries (the queries only with ``traj_placement='prefix'``), the plan as text
        (``plan_text``: the head's plan from a pass of the LLM over the prefix up to the queries, no
        gradient; ``with_plan=False`` stops before it, as :meth:`predict` does, which appends the line
        to the prefix cache with :func:`~bevlm.models.llm.query_slots.extend_prefix` instead)."""
        parts = []
        b = len(data_samples)
        if vis is not None:
            parts.append(vis)
        if self.prompt_embed is not None:  # after the visual tokens: the visual slice stays (0, N_vis)
            parts.append(self.prompt_embed.unsqueeze(0).expand(b, -1, -1))
        if self.perception_text is not None:
            if bev is None:
                raise ValueError("BEVVLM.build_prefix: perception_text needs the frame's BEV (pass bev=)")
            parts.append(self.perception_text.embed(self.det_head, bev, data_samples, self.llm))
            if self.question_grounding is not None:  # the questions the LLM reads, from the same detections
                self.question_grounding.apply(data_samples)
        if self.ego_text is not None:
            ref = parts[-1] if parts else self.llm.lm.get_input_embeddings().weight
            parts.append(self.ego_text.embed(data_samples, self.llm).to(ref.dtype))
        if self.ego_embed is not None:
            ego = torch.stack([s.ego_status for s in data_samples]).to(self.ego_embed[0].weight)
            parts.append(self.ego_embed(ego).unsqueeze(1))  # [B, 1, D]
        if self.traj_head is not None and self.traj_placement == "prefix":
            parts.append(self.traj_head.query_embeds(b))
        if not parts:
            raise ValueError("empty prefix: a blind model needs use_ego_status or a traj_head in the prefix "
                             "(traj_placement='prefix')")
        prefix = torch.cat(parts, dim=1)
        if self.plan_text is not None and with_plan:
            prefix = torch.cat([prefix, self._plan_embeds(prefix, data_samples).to(prefix.dtype)], dim=1)
        return prefix

    # ------------------------------------------------------------------ modes
    def forward(self, inputs: dict, data_samples: list | None = None, mode: str = "tensor"):
        imgs = inputs["imgs"]
        if mode == "loss":
            return self.loss(imgs, data_samples)
        if mode == "predict":
            return self.predict(imgs, data_samples)
        if mode == "tensor":
            vis, bev = self.visual_tokens(imgs, data_samples)
            return self.build_prefix(vis, data_samples, bev)
        raise ValueError(f"Invalid mode {mode!r}: use 'loss', 'predict' or 'tensor'")

    def loss(self, imgs, data_samples) -> dict:
        vis, bev = self.visual_tokens(imgs, data_samples)
        # the plan line (plan_text) is written inside the LLM's forward, from the query states of the
        # same pass (HFCausalLM.forward_train(insert=...)): the prefix here stops after the queries
        prefix = self.build_prefix(vis, data_samples, bev, with_plan=False)
        losses = {}
        if vis is not None:  # logged, not optimised (no 'loss' in the key): the scale of the visual tokens
            with torch.no_grad():
                losses["vis_norm"] = vis.detach().float().norm(dim=-1).mean()
        blocks = [blocks_for_policy(s.qa, self.qa_policy) for s in data_samples]
        if self.traj_source == "text":  # the trajectory as one more QA block (all waypoints known)
            for blk, s in zip(blocks, data_samples):
                if bool(s.gt_traj_mask.all()):
                    blk.append((TRAJ_QUESTION, format_waypoints(s.gt_traj)))
        context = None
        if self.traj_placement == "after_qa":  # the rounds the queries read: perception / prediction
            context = [context_flags(s.qa, self.qa_policy) for s in data_samples]
        out = self._lm_loss_by_adapter(blocks, prefix, data_samples, context=context)
        losses["loss_lm"] = out["loss_lm"] * self.loss_lm_weight
        if self.traj_head is not None and self.traj_source == "head":
            traj = self.traj_head(self._query_states(out["hidden_prefix"]) if context is None else out["hidden_queries"],
                                  self._traj_ego(data_samples), self._traj_command(data_samples))
            gt = torch.stack([s.gt_traj for s in data_samples]).to(traj)
            mask = torch.stack([s.gt_traj_mask for s in data_samples]).to(traj.device)
            losses.update(self.traj_head.loss(traj, gt, mask))
        if self.aux_head is not None and not ("aux_head" in self.frozen and "bev_encoder" in self.frozen):
            preds = self.aux_head(bev)
            losses.update(self.aux_head.loss(
                preds, [s.gt_boxes.to(bev.device) for s in data_samples],
                [s.gt_labels.to(bev.device) for s in data_samples]))
        return losses

    def _query_states(self, hidden_prefix: torch.Tensor) -> torch.Tensor:
        """``[B, K, D]`` the trajectory queries' states among the prefix states ``[B, P, D]`` (the last K,
        or the K before the plan line)."""
        k, after = self.traj_head.num_tokens, self.plan_text.num_tokens if self.plan_text is not None else 0
        end = hidden_prefix.shape[1] - after
        return hidden_prefix[:, end - k:end]

    def _plan_line(self, states: torch.Tensor, data_samples: list) -> torch.Tensor:
        """``[B, N, D]`` the plan lines written from the head's plans made from ``states``
        ``[B, P0, D]``, the LLM's last-layer states of a prefix that ends with the trajectory queries
        (no gradient: the line is text)."""
        head_dtype = next(self.traj_head.parameters()).dtype
        with torch.no_grad():
            queries = states[:, -self.traj_head.num_tokens:].detach().to(head_dtype)
            plans = self.traj_head(queries, self._traj_ego(data_samples), self._traj_command(data_samples))
        return self.plan_text.embed(data_samples, plans, self.llm)

    def _plan_embeds(self, prefix: torch.Tensor, data_samples: list) -> torch.Tensor:
        """``[B, N, D]`` the plan lines for ``prefix`` (which ends with the trajectory queries): the
        head's plans from one pass of the LLM over it (each sample's adapter; no gradient)."""
        groups: dict = {}
        for i, sample in enumerate(data_samples):
            groups.setdefault(self.adapter_for(sample), []).append(i)
        with torch.no_grad():
            states = torch.zeros_like(prefix)
            for adapter, idx in groups.items():
                if adapter is not None:
                    self.llm.set_adapter(adapter)
                states[idx] = self.llm.prefix_hidden(prefix[idx]).to(states)
        return self._plan_line(states, data_samples)

    # ------------------------------------------------------------------ multi-LoRA
    def adapter_for(self, sample) -> str | None:
        """The LoRA adapter of a sample's domain (None: no per-domain adapters)."""
        if not self.domain_adapters:
            return None
        domain = sample.metainfo.get("domain", "default")
        if domain not in self.domain_adapters:
            raise KeyError(f"sample {sample.metainfo.get('token')} has domain {domain!r}, which "
                           f"model.domain_adapters {self.domain_adapters} does not map; add it, or set the "
                           f"dataset's `domain` to one of {sorted(self.domain_adapters)}")
        return self.domain_adapters[domain]

    def _train_batch(self, blocks: list, num_prefix: int, context: list | None) -> dict:
        """The packed batch of ``blocks``; with ``context`` (``traj_placement='after_qa'``) the
        trajectory queries' K slots follow each row's blocks and read the flagged ones."""
        if context is None:
            return self.llm.build_batch(blocks, num_prefix)
        return build_packed_batch(self.llm.tokenizer, self.llm.prompt, blocks, num_prefix, self.llm.pad_id,
                                  query_slots=self.traj_head.num_tokens, query_context=context)

    def _train_forward(self, batch: dict, prefix: torch.Tensor, data_samples: list) -> dict:
        if "query_index" in batch:
            return forward_train_with_queries(self.llm, batch, prefix, self.traj_head.query_embeds(prefix.shape[0]))
        if self.plan_text is None:
            return self.llm.forward_train(batch, prefix)
        return self.llm.forward_train(batch, prefix, insert=lambda states: self._plan_line(states, data_samples))

    def _lm_loss_by_adapter(self, blocks: list, prefix: torch.Tensor, data_samples: list,
                            context: list | None = None) -> dict:
        """``forward_train`` per group of samples sharing an adapter; token-weighted mean loss.

        ``context``: per sample, the flags of the blocks the trajectory queries read
        (``traj_placement='after_qa'``; the output then has ``hidden_queries`` ``[B, K, D]``).
        With ``plan_text`` ``prefix`` ends with the trajectory queries and the plan line is written
        in the forward (``hidden_prefix`` then covers the line too).
        """
        num_prefix = prefix.shape[1] + (self.plan_text.num_tokens if self.plan_text is not None else 0)
        groups: dict = {}
        for i, sample in enumerate(data_samples):
            groups.setdefault(self.adapter_for(sample), []).append(i)
        if len(groups) == 1 and None in groups:
            return self._train_forward(self._train_batch(blocks, num_prefix, context), prefix, data_samples)
        total, loss, hidden, queries, order = 0, 0.0, [], [], []
        for adapter, idx in groups.items():
            self.llm.set_adapter(adapter)
            batch = self._train_batch([blocks[i] for i in idx], num_prefix,
                                      None if context is None else [context[i] for i in idx])
            out = self._train_forward(batch, prefix[idx], [data_samples[i] for i in idx])
            n = int((batch["labels"] != -100).sum())  # answer tokens of the group
            loss = loss + out["loss_lm"] * n
            total += n
            hidden.append(out["hidden_prefix"])
            queries.append(out.get("hidden_queries"))
            order += idx
        inverse = torch.argsort(torch.tensor(order, device=prefix.device))
        out = dict(loss_lm=loss / max(total, 1), hidden_prefix=torch.cat(hidden)[inverse])
        if context is not None:
            out["hidden_queries"] = torch.cat(queries)[inverse]
        return out

    @torch.no_grad()
    def predict(self, imgs, data_samples) -> list:
        """Answer every QA of each sample and predict its trajectory (history-only samples of a
        streamed test split are only encoded, and returned unanswered: see ``is_history_only``).

        Adds to each sample ``pred_answers`` {official index: answer}, ``pred_traj [6, 2]`` and
        ``efficiency`` (per-frame seconds of encoder / prefill / decode, generated tokens, and,
        for the first ``test_cfg.count_flops_frames`` calls, FLOPs of encoder and prefill).
        """
        test_cfg = self.test_cfg
        streaming = test_cfg.stream_temporal and self.vision == "bev" and self.temporal_fusion == "bev"
        history = [i for i, s in enumerate(data_samples) if is_history_only(s)]
        history_samples = [data_samples[i] for i in history]
        if history:  # frames of the stream that are not scored: only carry the temporal BEV
            self._stream_history(imgs[history], history_samples, streaming)
            keep = [i for i in range(len(data_samples)) if i not in set(history)]
            if not keep:  # returned unanswered (the test loop needs outputs); metrics skip them
                return history_samples
            imgs, data_samples = imgs[keep], [data_samples[i] for i in keep]
        b = len(data_samples)
        watch = Stopwatch()
        if streaming:  # not part of a streamed frame's cost: reported apart as history_s
            with watch.phase("history"):
                self.fill_temporal_cache(imgs, data_samples)
            imgs = imgs[:, -1:]
        flops = {}
        counting = self._flop_calls < test_cfg.count_flops_frames
        self._flop_calls += 1
        with watch.phase("encoder"), (count_flops(self) if counting else nullcontext({})) as enc_flops:
            vis, bev = self.visual_tokens(imgs, data_samples, streaming=streaming)
            if vis is not None:
                if self.temporal_fusion == "tokens" and test_cfg.pruning.bev_keep_ratio < 1.0:
                    raise ValueError("test_cfg.pruning.bev_keep_ratio ranks one frame's tokens; it does not apply "
                                     "to temporal_fusion='tokens' (use fastv_keep_ratio)")
                vis = prune_visual_tokens(self, vis, bev, test_cfg.pruning)
            prefix = self.build_prefix(vis, data_samples, bev, with_plan=False)
        n_vis = 0 if vis is None else vis.shape[1]
        if counting:
            flops["encoder"] = enc_flops["flops"] / b
            flops["prefill"] = 0
            flops["shared_prompt"] = 0  # one prefill of the shared prompt text (0 when not shared)
        for i, sample in enumerate(data_samples):
            adapter = self.adapter_for(sample)
            if adapter is not None:
                self.llm.set_adapter(adapter)
            spent_before = self.llm.text_prefill_flops_spent
            if self.llm.share_text_prefix:
                self.llm.text_cache()  # filled once per model / adapter, then reused
                if counting:
                    flops["shared_prompt"] += self.llm.text_prefill_flops() / b
            # FLOPs this frame spent building shared text caches (nonzero on the frames that built one)
            shared_spent = self.llm.text_prefill_flops_spent - spent_before
            with watch.phase("prefill"), (count_flops(self) if counting else nullcontext({})) as pre_flops:
                cache = prefill_with_setting(self.llm, prefix[i:i + 1], (0, n_vis), test_cfg.pruning)
            # the detections line's ids: speculative decoding may draft c-tags from them (answers unchanged)
            cache.lookup_ids = list(getattr(sample, "perception_ids", None) or []) or None
            if counting:
                flops["prefill"] += pre_flops["flops"] / b
            after_qa = self.traj_placement == "after_qa"
            if not after_qa:
                with watch.phase("traj"):
                    traj_tokens = self._predict_traj(sample, cache)
            if self.plan_text is not None:  # the plan as text after the prefix, before the questions
                with watch.phase("prefill"), (count_flops(self) if counting else nullcontext({})) as plan_flops:
                    ids = self.plan_text.ids([sample], sample.pred_traj[None], self.llm.tokenizer)[0]
                    cache = extend_prefix(self.llm, cache, ids)
                cache.lookup_ids = (cache.lookup_ids or []) + ids  # speculative drafts may copy from it
                if counting:
                    flops["prefill"] += plan_flops["flops"] / b
            extra, chosen, decoded = {}, {}, sample.qa
            with watch.phase("decode"):  # answering: decoding, and scoring options when MC is by likelihood
                if test_cfg.multiple_choice in ("likelihood", "calibrated"):
                    mc = [qa for qa in sample.qa if is_multiple_choice(qa)]
                    decoded = [qa for qa in sample.qa if not is_multiple_choice(qa)]
                    prior = self._option_prior() if test_cfg.multiple_choice == "calibrated" else None
                    chosen, _ = choose_by_likelihood(self.llm, cache, mc, self.qa_policy, prior=prior)
                    extra["mc_scored"] = len(mc)
                if test_cfg.closed_set is not None:  # open questions of closed-set families: scored, not decoded
                    fams = set(test_cfg.closed_set["families"])
                    closed = [qa for qa in decoded if qa.family in fams]
                    decoded = [qa for qa in decoded if qa.family not in fams]
                    scoring = test_cfg.closed_set["scoring"]
                    prior = self._option_prior() if scoring == "calibrated" else None
                    picked, _ = choose_closed_answers(self.llm, cache, closed, self._closed_candidates(test_cfg),
                                                      self.qa_policy, prior=prior,
                                                      tag_calibrated=scoring == "tag_calibrated")
                    chosen = {**chosen, **picked}
                    extra["closed_scored"] = len(closed)
                res = answer_frame(self.llm, cache, decoded, self.qa_policy, test_cfg.max_new_tokens,
                                   test_cfg.family_max_new_tokens, decoder=self.frame_decoder)
            sample.pred_answers = {**res.answers, **chosen}
            if after_qa:  # planning conditioned on the model's own perception / prediction answers
                with watch.phase("traj"):  # (multiple-choice letters included, however they were chosen)
                    extra["traj_context_tokens"] = self._predict_traj_after_qa(sample, cache, sample.pred_answers)
                traj_tokens = 0  # nothing decoded
            n_tokens = res.tokens
            sample.efficiency = {"tokens": n_tokens, "questions": len(sample.qa), "rounds": res.rounds,
                                 "traj_tokens": traj_tokens,
                                 "prefix_tokens": int(prefix.shape[1]) + (self.plan_text.num_tokens if self.plan_text else 0),
                                 "shared_prompt_spent": shared_spent,
                                 **flops, **extra}
        secs = watch.as_dict()
        # the history-only frames streamed since the last scored frame are history, not frame cost
        secs["history"] = secs.get("history", 0.0) + self._history_s
        self._history_s = 0.0
        for sample in data_samples:  # batch-level phases are shared equally by the frames
            sample.efficiency.update({f"{k}_s": v / b for k, v in secs.items()})
        return history_samples + data_samples

    _history_s = 0.0  # encoder seconds of history-only frames not yet reported

    @torch.no_grad()
    def _stream_history(self, imgs: torch.Tensor, data_samples: list, streaming: bool) -> None:
        """Encode history-only frames (a subsampled test split streams every frame) so that the
        temporal cache holds each scored frame's true previous BEV, as on the full split. Models
        that do not stream a BEV (blind, camera tokens, T=1, stacked frame tokens) skip them."""
        if not (streaming and self.bev_encoder is not None and self.bev_encoder.use_temporal):
            return
        t0 = time.perf_counter()
        self.encode_bev(imgs[:, -1:], data_samples, streaming=True)
        self._history_s += time.perf_counter() - t0

    def _predict_traj_after_qa(self, sample, cache, answers: dict) -> int:
        """``traj_placement='after_qa'``: set ``sample.pred_traj`` from the queries placed after the
        sample's perception / prediction rounds with ``answers`` (official index -> answer text, the
        model's own at test time), in one forward on a copy of the frame's prefix cache.

        Returns:
            The number of tokens that forward ran (context rounds + the K queries).
        """
        blocks = context_blocks(sample.qa, self.qa_policy, answers)
        hidden, tokens = hidden_after_blocks(self.llm, cache, blocks, self.traj_head.query_embeds(1))
        head_dtype = next(self.traj_head.parameters()).dtype  # the LLM may run in another dtype
        sample.pred_traj = self.traj_head(hidden.to(head_dtype), self._traj_ego([sample]),
                                          self._traj_command([sample]))[0].float().cpu()
        return tokens

    def _traj_ego(self, data_samples: list) -> torch.Tensor | None:
        """``[B, E]`` ego status for the trajectory head's direct ego path (None when it has none)."""
        if self.traj_head is None or not self.traj_head.needs_ego_status:
            return None
        return torch.stack([s.ego_status for s in data_samples]).to(next(self.traj_head.parameters()))

    def _traj_command(self, data_samples: list) -> torch.Tensor | None:
        """``[B]`` driving commands for a head that reads the command (None for one without)."""
        if self.traj_head is None or not getattr(self.traj_head, "num_commands", 0):
            return None
        missing = [i for i, s in enumerate(data_samples) if "ego_command" not in s]
        if missing:
            raise ValueError(f"BEVVLM: the trajectory head reads the driving command (traj_head.num_commands="
                             f"{self.traj_head.num_commands}) but data samples {missing} have no ego_command. Fix: "
                             "pack the items with PackDriveInputs (it derives the command from ego_fut_traj), or "
                             "build the model without traj_head.num_commands")
        return torch.stack([s.ego_command for s in data_samples]).long().to(next(self.traj_head.parameters()).device)

    def _predict_traj(self, sample, cache) -> int:
        """Set ``sample.pred_traj`` from the head or the decoded text; returns decoded tokens."""
        if self.traj_source == "head":
            if self.traj_head is not None:
                k = self.traj_head.num_tokens
                head_dtype = next(self.traj_head.parameters()).dtype  # the LLM may run in another dtype
                sample.pred_traj = self.traj_head(cache.hidden_prefix[:, -k:].to(head_dtype),
                                                  self._traj_ego([sample]),
                                                  self._traj_command([sample]))[0].float().cpu()
            return 0
        ids = self.llm.generate_ids(cache, TRAJ_QUESTION, self.test_cfg.traj_max_new_tokens)
        horizon = int(sample.gt_traj.shape[0]) if "gt_traj" in sample else 6
        sample.pred_traj, sample.traj_text_ok = parse_waypoints(self.llm.decode_ids(ids), horizon)
        return len(ids) + 1

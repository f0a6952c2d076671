"""Training hooks."""
from __future__ import annotations

import json
import os

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook

from bevlm.inference.ptq import load_quantized_llm, quantize_bevvlm
from bevlm.inference.quantization.settings import quant_settings
from bevlm.inference.variants import apply_variant, check_variant, prior_inputs, variant_inputs
from bevlm.registry import HOOKS


@HOOKS.register_module()
class ParamChecksumHook(Hook):
    """Write a checksum of the trainable parameters of each rank after training.

    In DDP every rank must end with identical weights; comparing the files
    ``param_checksum_rank{r}.json`` checks that the gradient all-reduce really happened. Under FSDP
    the full parameters are gathered first (each rank holds a shard).
    """

    def after_train(self, runner) -> None:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        if isinstance(runner.model, FSDP):  # sharded: gather the full parameters on every rank
            with FSDP.summon_full_params(runner.model, writeback=False):
                self._write(runner, runner.model.module)
            return
        self._write(runner, runner.model.module if hasattr(runner.model, "module") else runner.model)

    @staticmethod
    def _write(runner, model: torch.nn.Module) -> None:
        params = [p.detach().double().flatten() for p in model.parameters() if p.requires_grad]
        flat = torch.cat(params)
        record = {"rank": get_rank(), "sum": float(flat.sum()), "abs_sum": float(flat.abs().sum()),
                  "numel": int(flat.numel())}
        path = os.path.join(runner.work_dir, f"param_checksum_rank{get_rank()}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.replace(path + ".tmp", path)


@HOOKS.register_module()
class PostTrainingQuantHook(Hook):
    """Quantise the LLM of the loaded model right before testing (PTQ, no training).

    Calibration frames (for GPTQ) come from the *training* split, never from the evaluated one.

    Args:
        quant: the quantisation settings: a dict with ``method`` (``'rtn' | 'gptq' |
            'int8_dynamic'``) and that method's options, exactly as a benchmark variant's
            ``quant`` switch, or a settings object (see
            :mod:`bevlm.inference.quantization.settings`); checked when the hook is built.
        calib_frames: number of training frames used for calibration (GPTQ).

    Example::

        custom_hooks = [dict(type="PostTrainingQuantHook",
                             quant=dict(method="gptq", group_size=64, embeddings="int4"))]
    """

    priority = "VERY_HIGH"

    def __init__(self, quant, calib_frames: int = 4) -> None:
        self.settings = quant_settings(quant)
        if isinstance(calib_frames, bool) or not isinstance(calib_frames, int) or calib_frames <= 0:
            raise ValueError(f"PostTrainingQuantHook: calib_frames={calib_frames!r} must be a positive integer "
                             "(training frames used for GPTQ calibration)")
        self.calib_frames = calib_frames

    def before_test(self, runner) -> None:
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        model.eval()
        calib = None
        if self.settings.method == "gptq":
            calib, _ = variant_inputs(model, runner.cfg, [dict(quant=self.settings.to_dict())], self.calib_frames)
        report = quantize_bevvlm(model, self.settings, calib=calib)
        runner.logger.info("post-training quantisation:\n" + report.table())


@HOOKS.register_module()
class QuantizedLLMHook(Hook):
    """Swap in the quantised LLM of ``tools/quantize.py`` after the checkpoint is loaded (the
    vision side stays the checkpoint's), right before testing.

    Args:
        path: the ``.safetensors`` file of :func:`bevlm.inference.ptq.save_quantized_llm`.
        kernel: int4 compute kernel (default: the one it was quantised with).
    """

    priority = "VERY_HIGH"

    def __init__(self, path: str, kernel: str | None = None) -> None:
        self.path, self.kernel = path, kernel

    def before_test(self, runner) -> None:
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        model.eval()
        settings = load_quantized_llm(model, self.path, self.kernel)
        runner.logger.info(f"quantised LLM loaded from {self.path}: {settings}")


@HOOKS.register_module()
class InferenceVariantHook(Hook):
    """Apply an inference variant (see :mod:`bevlm.inference.variants`) to the loaded model right
    before testing, e.g. the lossless stack (shared prompt cache + batched speculative decoding),
    so ``tools/test.py --variant NAME`` evaluates the model as ``tools/benchmark.py`` runs it.

    The variant's ``test_cfg`` keys reach the model through ``BEVVLM.set_test_cfg`` (after the
    checkpoint is loaded, together with its weight transformations); calibration frames and the
    speculative answer datastore come from the *training* split.

    Args:
        variant: the variant's switches (``test_cfg`` keys and ``qa_policy`` / ``quant`` /
            ``llm_dtype``, see :data:`bevlm.inference.variants.VARIANT_KEYS`).
        name: its name, for the log.
        calib_frames: training frames used for calibration (GPTQ, skip-layer search).
    """

    priority = "VERY_HIGH"

    def __init__(self, variant: dict, name: str = "variant", calib_frames: int = 4) -> None:
        check_variant(variant, f"InferenceVariantHook({name})")
        self.variant, self.name, self.calib_frames = dict(variant), name, calib_frames

    def before_test(self, runner) -> None:
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        model.eval()
        calib, train_qa = variant_inputs(model, runner.cfg, [self.variant], self.calib_frames)
        prior = prior_inputs(model, runner.cfg, [self.variant])
        apply_variant(model, self.variant, calib, log=runner.logger.info, train_qa=train_qa, prior=prior)
        runner.logger.info(f"inference variant {self.name!r} applied: {self.variant}")


@HOOKS.register_module()
class AnswerBudgetCheckHook(Hook):
    """Before testing, compare every question family's decode budget with the test set's reference
    answers, and warn (naming the family, the budget, the longest reference and the
    ``--cfg-options`` fix) where references are longer than the budget: those answers would be cut
    by the decoder, silently lowering the scores.

    Runs after the inference-variant hooks (its priority is lower), so it checks the budgets the
    test decodes with. Multiple-choice questions answered by likelihood decode nothing and are not
    checked; a test set without answers (a questions-only file) has nothing to check.

    Args:
        out_file: also write the findings (``{family: {budget, longest, over, answers}}``, ``{}``
            when every reference fits) to this JSON file; None: log only.
    """

    priority = "LOW"

    def __init__(self, out_file: str | None = None) -> None:
        self.out_file = out_file

    def before_test(self, runner) -> None:
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        entries = getattr(runner.test_dataloader.dataset, "data_list", None) or []
        found = answer_budget_findings(model, entries, warn=runner.logger.warning)
        if self.out_file and found is not None:
            from bevlm.utils import atomic_write_json

            os.makedirs(os.path.dirname(os.path.abspath(self.out_file)), exist_ok=True)
            atomic_write_json(found, self.out_file)


def answer_budget_findings(model, entries: list[dict], warn=None) -> dict | None:
    """The question families whose reference answers in ``entries`` (a test dataset's ``data_list``:
    dicts with a ``qa`` list of QAItems) are longer than ``model``'s decode budget for them
    (:func:`bevlm.models.qa.budget_shortfalls`), each also passed to ``warn`` as a message naming the
    family, the budget, the longest reference and the ``--cfg-options`` fix. None for a model without
    a language side (nothing to check). Multiple-choice questions are skipped when the model answers
    them by option likelihood, and the families of ``test_cfg.closed_set`` always (nothing is decoded
    for them)."""
    from bevlm.models.qa import budget_shortfalls, is_multiple_choice

    test_cfg, llm = getattr(model, "test_cfg", None), getattr(model, "llm", None)
    if test_cfg is None or llm is None or not hasattr(test_cfg, "family_max_new_tokens"):
        return None  # not a language model (e.g. the detection pretraining)
    by_likelihood = getattr(test_cfg, "multiple_choice", "generate") in ("likelihood", "calibrated")
    closed = set((getattr(test_cfg, "closed_set", None) or {}).get("families") or ())  # scored, not decoded
    items = [qa for e in entries for qa in e.get("qa", [])
             if qa.answer and not (by_likelihood and is_multiple_choice(qa)) and qa.family not in closed]

    def encode(text: str) -> list[int]:
        return list(llm.tokenizer(text, add_special_tokens=False)["input_ids"])

    found = budget_shortfalls(items, encode, test_cfg.max_new_tokens, test_cfg.family_max_new_tokens)
    for family, f in found.items():
        if warn is not None:
            warn(f"answer budget: {f['over']} of {f['answers']} reference answers of family {family!r} are "
                 f"longer than its decode budget of {f['budget']} tokens (longest {f['longest']}); they will "
                 f"be cut. Fix: --cfg-options model.test_cfg.family_max_new_tokens.{family}="
                 f"{_round_up(f['longest'] * 1.2)} (or raise it in the model config)")
    return found


def _round_up(n: float, step: int = 16) -> int:
    return int(-(-int(n) // step) * step)


def _scored_scene_tokens(cfg) -> set:
    """The scene tokens of the info files the config's val and test sets read (those that exist)."""
    from bevlm.datasets import info_file_frames

    tokens = set()
    for key in ("val_dataloader", "test_dataloader"):
        loader = cfg.get(key) or {}
        dataset = loader.get("dataset") or {}
        for ds in dataset.get("datasets", [dataset]):
            ann = ds.get("ann_file")
            if not ann:
                continue
            path = ann if os.path.isabs(ann) else os.path.join(ds.get("data_root", "") or "", ann)
            if os.path.isfile(path):
                tokens |= {f["scene_token"] for f in info_file_frames(path)}
    return tokens


def extra_fit_frames(paths, cfg) -> list[dict]:
    """The frames of the info files ``paths`` for a fit of the ego-status planner, checked before any
    fitting: each file loads as an info file, its frames hold what the fit reads (token, scene, ego
    status, future and its mask), and none of its scenes is scored by ``cfg`` (its val / test sets)."""
    from bevlm.datasets import info_file_frames

    if not paths:
        return []
    scored = _scored_scene_tokens(cfg)
    frames = []
    for path in paths:
        data = info_file_frames(path)
        for frame in data:
            for key in ("token", "scene_token", "ego_status", "ego_fut_traj", "ego_fut_mask"):
                if key not in frame:
                    raise KeyError(f"{path}: frame {frame.get('token', '?')} has no '{key}'. Fix: regenerate the "
                                   "file with tools/create_data.py (the planner reads the ego states and futures)")
        clash = sorted({f["scene_token"] for f in data} & scored)
        if clash:
            raise ValueError(f"{path}: {len(clash)} of its scenes are in the config's val / test set (e.g. "
                             f"{clash[0]}). Fix: give the ego-status planner's fit training logs only")
        frames += data
    return frames


@HOOKS.register_module()
class EgoPriorFitHook(Hook):
    """Fit the trajectory head's fitted prior (``traj_head.fitted_prior_hidden > 0``) on the training
    frames before the first iteration: the head then starts as the fitted ego-status planner (the
    ``ego_mlp`` / ``ego_mlp_cmd`` reference of :mod:`bevlm.evaluation.planning_baselines`, the AD-MLP
    idea) instead of as CTRA.

    :func:`~bevlm.evaluation.planning_baselines.fit_ego_mlp` fits it: full-batch AdamW on the info
    files' ego states (with the driving command when the head takes one) and recorded futures (no
    images; seconds on a CPU), its number of steps chosen on held-out training scenes. The prior stays
    frozen and is saved with the checkpoint. A resumed training (``runner.iter > 0``) keeps the
    checkpoint's prior. The fit's held-out L2 and step count go to the log and to
    ``WORK_DIR/ego_prior_fit.json``; it runs under its own random state, so the training's random
    stream is the same with or without it.

    Args:
        max_epochs: the most full-batch steps of the fit (the held-out scenes choose fewer).
        lr: its learning rate.
        seed: its random seed.
        extra_ann_files: more info files (``tools/create_data.py``) whose frames join the fit: driving
            logs for the planner alone (only their ego states and futures are read, no image), e.g. a
            second generated world. A file that holds a scene of the config's val or test set is
            refused (the prior would be fitted on the frames it is scored on).
    """

    priority = "LOW"

    def __init__(self, max_epochs: int = 2000, lr: float = 3e-3, seed: int = 0,
                 extra_ann_files: list[str] | tuple[str, ...] = ()) -> None:
        self.max_epochs, self.lr, self.seed = int(max_epochs), float(lr), int(seed)
        if isinstance(extra_ann_files, str):
            raise TypeError(f"EgoPriorFitHook: extra_ann_files={extra_ann_files!r} must be a list of info files. "
                            f"Fix: extra_ann_files=[{extra_ann_files!r}]")
        self.extra_ann_files = [str(p) for p in extra_ann_files]

    def before_train(self, runner) -> None:
        from bevlm.datasets import dataset_frames
        from bevlm.evaluation.planning_baselines import fit_ego_mlp

        if runner.iter > 0:
            runner.logger.info(f"EgoPriorFitHook: resumed at iteration {runner.iter}; the trajectory head keeps "
                               "the checkpoint's fitted prior")
            return
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        head = getattr(model, "traj_head", None)
        if head is None or getattr(head, "fitted_prior", None) is None:
            config = getattr(runner.cfg, "filename", None) or "the config"
            raise ValueError(f"{config}: EgoPriorFitHook fits the trajectory head's fitted prior, but the model has "
                             f"{'no trajectory head' if head is None else 'a head without one'}. Fix: set "
                             "model.traj_head.fitted_prior_hidden=64 (with kinematic_prior='ctra'), or drop the hook "
                             "from custom_hooks")
        extra = extra_fit_frames(self.extra_ann_files, runner.cfg)
        frames = dataset_frames(runner.train_dataloader.dataset)
        seen = {f["token"] for f in frames}
        extra = [f for f in extra if f["token"] not in seen]
        train_frames = len(frames)
        frames = frames + extra
        command = head.num_commands > 0
        planner = fit_ego_mlp(frames, steps=head.horizon, dt=head.step_s, hidden=head.fitted_prior_hidden,
                              lr=self.lr, max_epochs=self.max_epochs, seed=self.seed, command=command)
        head.load_fitted_prior(planner.net, planner.mean, planner.std)
        key = "ego_mlp_cmd" if command else "ego_mlp"
        runner.logger.info(f"EgoPriorFitHook: the trajectory head's prior fitted on {len(frames)} frames "
                           f"({train_frames} of the training set, {len(extra)} of extra_ann_files) "
                           f"in {planner.epochs} steps (held-out scenes: L2 {planner.holdout_l2[key]:.3f} m vs "
                           f"CTRA {planner.holdout_l2['ctra']:.3f} m)")
        if get_rank() == 0:
            record = {"train_frames": train_frames, "extra_frames": len(extra),
                      "extra_ann_files": self.extra_ann_files, "epochs": planner.epochs, "command": command,
                      "holdout_l2_avg_stp3": planner.holdout_l2}
            path = os.path.join(runner.work_dir, "ego_prior_fit.json")
            with open(path + ".tmp", "w") as f:
                json.dump(record, f, indent=1)
            os.replace(path + ".tmp", path)

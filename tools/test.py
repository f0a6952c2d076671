"""Evaluate a checkpoint: ``python tools/test.py CONFIG CHECKPOINT [--work-dir D] [--out-dir O]``.

Writes, under ``--out-dir`` (default ``<work_dir>/test``): the official-format DriveLM
predictions ``drivelm.output.json`` and test file ``drivelm.test_eval.json`` (score them with
tools/eval_drivelm.py or the official evaluation.py), ``drivelm.results.json``, ``metrics.json``
with every metric, ``efficiency.json`` and ``per_frame.json`` (per-frame planning and efficiency
records; with the two official files, what tools/compare.py needs to re-score any subset of frames)
and ``answer_budget.json`` (question families whose reference answers are longer than their decode
budget, also logged as a warning with the fix before decoding starts; ``{}`` when all fit).

``--variant NAME`` tests the model as one inference variant of ``--variants-file`` (default
``configs/benchmarks/default.py``) runs it, e.g. ``--variant lossless`` (shared prompt cache + batched
speculative decoding: the same answers as plain greedy decoding, about 3.5x faster on CPU). Its
``test_cfg`` keys override the model's ``test_cfg`` (``BEVVLM.set_test_cfg``) and its weight
transformations (``quant``, ``llm_dtype``) run, after the checkpoint is loaded
(``InferenceVariantHook``).

``--submission QUESTIONS.json`` answers a questions-only DriveLM test file (the challenge's
``v1_1_val_nus_q_only.json``; the config's test info file must hold its frames) and writes
``drivelm.output.json`` and the challenge's ``drivelm.submission.json`` under ``--out-dir`` instead
of scoring (``--submission-info team=... method=... authors="A, B"`` fills the submission fields).

``--planning-only`` plans every frame of the test scenes (in scene and time order, each with its
whole history) and scores the plans alone, answering no question: ``metrics.json`` and
``per_frame.json`` under ``WORK_DIR/test_planning`` (L2 and collisions of the whole val split, 144
frames on the mini world instead of the 48 the default split scores, in minutes; the scored frames'
plans are the full test's).

``--quantized FILE`` tests with the quantised LLM that ``tools/quantize.py`` wrote (the vision
side from CHECKPOINT).
"""
import argparse
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from bevlm.engine.checkpoint import check_checkpoint_path
from bevlm.engine.config_check import check_config, merge_cfg_options

from bevlm.evaluation.drivelm_files import atomic_write_json
from bevlm.inference.variants import check_variant


def parse_args():
    parser = argparse.ArgumentParser(description="Test a BEV-VLM")
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--work-dir")
    parser.add_argument("--out-dir", help="where output.json / test_eval.json / results go")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction)
    parser.add_argument("--variant", help="inference variant to test with (a key of --variants-file)")
    parser.add_argument("--variants-file", default=osp.join(osp.dirname(osp.abspath(__file__)), "..", "configs",
                                                            "benchmarks", "default.py"))
    parser.add_argument("--quantized", help="quantised LLM file of tools/quantize.py to test with")
    parser.add_argument("--allow-partial", action="store_true",
                        help="load a checkpoint whose keys / shapes do not all fit the model (default: stop)")
    parser.add_argument("--submission", metavar="QUESTIONS_JSON",
                        help="answer this questions-only DriveLM test file and write the challenge submission "
                             "(no scoring)")
    parser.add_argument("--submission-info", nargs="+", default=[], metavar="KEY=VALUE",
                        help="submission fields: method, team, authors (comma separated), email, institution, country")
    parser.add_argument("--planning-only", action="store_true",
                        help="plan every frame of the test scenes and score the plans alone (no questions "
                             "answered; PlanningMetric only; default out dir WORK_DIR/test_planning)")
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none")
    return parser.parse_args()


def _single_test_dataset(cfg, args, option):
    """The test dataset's config, which ``option`` rewrites; one BEVDriveDataset, or a named stop."""
    dataset = cfg.test_dataloader.dataset
    if dataset.get("type") != "BEVDriveDataset":
        raise SystemExit(f"{args.config}: {option} needs test_dataloader.dataset of type BEVDriveDataset, "
                         f"got {dataset.get('type')!r}. Fix: test with a single-dataset config")
    return dataset


def _set_submission(cfg, args, out_dir):
    """Point the test set at the questions file and replace the metrics by the submission writer."""
    from bevlm.datasets.drivelm_io import load_drivelm_questions
    from bevlm.evaluation.drivelm_files import SUBMISSION_FIELDS

    info = {}
    for item in args.submission_info:
        key, sep, value = item.partition("=")
        if not sep or key not in SUBMISSION_FIELDS:
            raise SystemExit(f"--submission-info {item!r}: expected KEY=VALUE with KEY one of {list(SUBMISSION_FIELDS)}")
        info[key] = value
    load_drivelm_questions(args.submission)  # a bad file stops here, before the model is built
    dataset = _single_test_dataset(cfg, args, "--submission")
    dataset["questions_file"] = args.submission
    cfg.test_evaluator = [dict(type="DriveLMSubmissionWriter", questions_file=args.submission,
                               outfile_prefix=osp.join(out_dir, "drivelm"), submission_info=info)]


def _set_planning_only(cfg, args):
    """Every frame of the test scenes planned and scored, in scene and time order (each with its whole
    history), no question answered: the plans of the whole split for the cost of the vision side and one
    prefix per frame."""
    if args.submission or args.variant or args.quantized:
        raise SystemExit("--planning-only scores the plans alone; it does not combine with --submission, "
                         "--variant or --quantized")
    dataset = _single_test_dataset(cfg, args, "--planning-only")
    dataset.update(qa_mode="none", require_qa=False, frame_stride=1, stream_skipped=False, max_frames=None)
    cfg.test_evaluator = [dict(type="PlanningMetric")]


def main():
    args = parse_args()
    import bevlm.engine  # noqa: F401

    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:  # top-level variables (data_root) reach the values copied from them
        merge_cfg_options(cfg, args.cfg_options)
    check_config(cfg, args.config)  # misspelt keys / wrong types stop here, before any work
    cfg.work_dir = args.work_dir or cfg.get("work_dir") or osp.join(
        "work_dirs", osp.splitext(osp.basename(args.config))[0])
    out_dir = args.out_dir or osp.join(cfg.work_dir, "test_planning" if args.planning_only else "test")
    if args.planning_only:
        _set_planning_only(cfg, args)
    evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
    for ev in evaluators:
        if ev.get("type") == "DriveLMMetric":  # -> drivelm.output.json, drivelm.test_eval.json, ...
            ev["outfile_prefix"] = osp.join(out_dir, "drivelm")
        elif ev.get("type") in ("EfficiencyMetric", "PlanningMetric", "NuScenesDetMetric"):  # -> efficiency.json, per_frame.json
            ev["outfile_prefix"] = out_dir
    if args.submission:
        _set_submission(cfg, args, out_dir)
    if args.variant:
        variants = Config.fromfile(args.variants_file).variants
        if args.variant not in variants:
            raise SystemExit(f"{args.variants_file}: no variant {args.variant!r} in `variants`; "
                             f"choose one of {sorted(variants)}")
        check_variant(variants[args.variant].to_dict(), f"{args.variants_file}: variant {args.variant!r}")
        cfg.custom_hooks = list(cfg.get("custom_hooks") or []) + [
            dict(type="InferenceVariantHook", name=args.variant, variant=variants[args.variant].to_dict())]
    elif (cfg.model.get("test_cfg") or {}).get("multiple_choice") == "calibrated" or \
            (cfg.model.get("test_cfg") or {}).get("closed_set"):
        # the config's own settings, plus the content-free frame (mean training prefix) or the
        # closed-set families' training answers they need
        cfg.custom_hooks = list(cfg.get("custom_hooks") or []) + [
            dict(type="InferenceVariantHook", name="config", variant={})]
    if args.quantized:
        if not osp.isfile(args.quantized):
            raise SystemExit(f"--quantized {args.quantized}: no such file; write it with tools/quantize.py")
        # before any --variant hook (same priority, earlier in the list): the variant runs on the int4 LLM
        cfg.custom_hooks = [dict(type="QuantizedLLMHook", path=args.quantized)] + list(cfg.get("custom_hooks") or [])
    # reference answers longer than their family's decode budget are named before decoding starts
    cfg.custom_hooks = list(cfg.get("custom_hooks") or []) + [
        dict(type="AnswerBudgetCheckHook", out_file=osp.join(out_dir, "answer_budget.json"))]
    cfg.load_from = args.checkpoint
    check_checkpoint_path(args.checkpoint)  # remote / missing / empty files stop here, before any work
    cfg.default_hooks.plain_checkpoint = dict(type="PlainCheckpointHook", strict_load=not args.allow_partial)
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()

    def plain(v):  # numpy scalars -> python numbers
        return v.item() if hasattr(v, "item") else v

    atomic_write_json({k: plain(v) for k, v in metrics.items()}, osp.join(out_dir, "metrics.json"))
    print(f"results written to {out_dir}")
    return metrics


if __name__ == "__main__":
    main()

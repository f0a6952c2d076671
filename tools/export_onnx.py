"""Export a trained BEV-VLM's vision path to ONNX, check it against PyTorch and time it.

  python tools/export_onnx.py CONFIG CHECKPOINT --out DIR [--int8 [all matmul]] [--frames N] \\
      [--repeats R] [--threads T] [--opset 18] [--static-shapes] [--cfg-options KEY=VALUE ...]

Writes ``DIR/vision_fp32.onnx`` (backbone + FPN + BEVFormer-lite + projector; inputs: one frame's
normalised images, ego2img and, for a temporal encoder, the previous BEV with its ego motion;
outputs: the visual tokens and the BEV; see ``bevlm.inference.onnx_export``), with ``--int8``
its dynamic int8 quantisations (``all``: every operator type onnxruntime quantises, Conv and
MatMul -> ``vision_int8.onnx``; ``matmul``: MatMul only -> ``vision_int8_matmul.onnx``), and
``DIR/onnx_report.json``.

Check: the first N frames of the config's test split are streamed in order as in testing.
PyTorch runs the model's own path (``BEVVLM.visual_tokens``, its temporal cache); each
onnxruntime model keeps its own previous BEV (its ``bev`` output, looked up with the same
``TemporalBEVCache`` rule), so errors carried from frame to frame are included. Printed: max
absolute error of the visual tokens and of the BEV, and that error relative to the output scale
(max |PyTorch value|); the fp32 model must stay within ``--tol`` of the scale (exit 1 otherwise).

Timing: PyTorch fp32 (the eager vision path), ORT fp32 and each ORT int8 model run interleaved on
the same inputs (R rounds over the N frames, the order rotating every round, after one warm-up
call each); medians per frame. torch and onnxruntime get the same thread count (``--threads``,
default: torch's, which follows OMP_NUM_THREADS).
"""
import argparse
import os
import os.path as osp
import sys

INT8_VARIANTS = {"all": ("vision_int8.onnx", None), "matmul": ("vision_int8_matmul.onnx", ("MatMul",))}


def parse_args(argv=None):
    from mmengine.config import DictAction

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, help="output folder (ONNX files and onnx_report.json)")
    p.add_argument("--int8", nargs="*", choices=sorted(INT8_VARIANTS), default=None,
                   help="also quantise to dynamic int8 and time it: 'all' (Conv + MatMul, the default of "
                        "--int8 alone) and / or 'matmul' (MatMul only)")
    p.add_argument("--frames", type=int, default=4, help="test-split frames to check and time (default 4)")
    p.add_argument("--repeats", type=int, default=3, help="timing rounds over the frames (default 3)")
    p.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads (default: torch's)")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--static-shapes", action="store_true",
                   help="a graph with fixed tensor shapes (spatial cross-attention over all BEV queries, more "
                        "work) instead of the per-camera number of visible queries computed in the graph")
    p.add_argument("--tol", type=float, default=1e-4,
                   help="max error of the fp32 model relative to the output scale (default 1e-4)")
    p.add_argument("--cfg-options", nargs="+", action=DictAction)
    args = p.parse_args(argv)
    if args.int8 is not None and not args.int8:
        args.int8 = ["all"]
    if args.frames < 1 or args.repeats < 1:
        p.error("--frames and --repeats must be >= 1")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def _median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def _check_inputs(args):
    """The cheap checks, before any work: files exist, the model is a BEV model."""
    from mmengine.config import Config

    from bevlm.engine.checkpoint import CheckpointError, check_checkpoint_path
    from bevlm.engine.config_check import check_config, merge_cfg_options

    if not osp.isfile(args.config):
        raise SystemExit(f"{args.config}: config not found. Fix: pass a config file, e.g. configs/bev_vlm.py")
    try:
        check_checkpoint_path(args.checkpoint)
    except CheckpointError as exc:
        raise SystemExit(str(exc)) from None
    from bevlm.engine.config_check import ConfigError

    cfg = Config.fromfile(args.config)
    try:
        if args.cfg_options:
            merge_cfg_options(cfg, args.cfg_options)
        check_config(cfg, args.config)
    except ConfigError as exc:
        raise SystemExit(str(exc)) from None
    vision = cfg.model.get("vision", "bev")
    fusion = cfg.model.get("temporal_fusion", "bev")
    if vision != "bev" or fusion != "bev":
        raise SystemExit(f"{args.config}: model.vision={vision!r}, temporal_fusion={fusion!r}: the ONNX export covers "
                         "the BEV vision path (vision='bev', temporal_fusion='bev'). Fix: export a BEV model's config")
    return cfg


def main(argv=None):
    args = parse_args(argv)
    import bevlm.engine  # noqa: F401  (registers everything)

    try:
        from bevlm.inference.onnx_export import _require
        for module in ("onnx", "onnxruntime", "onnxscript"):
            _require(module)
    except ImportError as exc:
        raise SystemExit(str(exc)) from None
    cfg = _check_inputs(args)

    import json
    import platform
    import time

    import torch
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope

    from bevlm.engine.benchmark import load_model
    from bevlm.engine.checkpoint import CheckpointError
    from bevlm.inference.onnx_export import (ORTVisionRunner, VisionPath, export_vision_onnx, output_errors,
                                             quantize_onnx_int8)
    from bevlm.models.temporal_cache import TemporalBEVCache
    from bevlm.registry import DATASETS
    from bevlm.utils import atomic_write_json

    init_default_scope("bevlm")
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    load_start = os.getloadavg()

    ds_cfg = cfg.test_dataloader.dataset.to_dict()
    ds_cfg.update(qa_mode="frame", frame_stride=1, max_frames=args.frames, stream_skipped=False)
    try:
        dataset = DATASETS.build(ds_cfg)
    except FileNotFoundError as exc:
        raise SystemExit(f"{args.config}: the test split cannot be read: {exc}") from None
    try:
        model = load_model(cfg, args.checkpoint)
    except CheckpointError as exc:
        raise SystemExit(str(exc)) from None
    vision = VisionPath(model)

    # --- the frames, preprocessed once (as testing streams them: the current frame of each item)
    frames = []
    for k in range(len(dataset)):
        data = model.data_preprocessor(pseudo_collate([dataset[k]]), False)
        frames.append((data["inputs"]["imgs"][:, -1:], data["data_samples"]))
    print(f"export_onnx: {len(frames)} test frames, {threads} thread(s), config {args.config}")

    # --- export (traced on the first frame, no previous BEV) and quantise
    os.makedirs(args.out, exist_ok=True)
    imgs0, samples0 = frames[0]
    ego2img0 = torch.stack([s.ego2img[-1] for s in samples0])
    t0 = time.perf_counter()
    info = export_vision_onnx(vision, vision.make_inputs(imgs0[:, -1], ego2img0), osp.join(args.out, "vision_fp32.onnx"),
                              opset=args.opset, static_shapes=args.static_shapes)
    export_s = time.perf_counter() - t0
    files = {"ort_fp32": info["path"]}
    for name in args.int8 or []:
        fname, ops = INT8_VARIANTS[name]
        key = "ort_int8" if name == "all" else f"ort_int8_{name}"
        files[key] = quantize_onnx_int8(info["path"], osp.join(args.out, fname), op_types=ops)
    runners = {key: ORTVisionRunner(path, threads=threads) for key, path in files.items()}
    print(f"export_onnx: exported in {export_s:.1f} s: " + ", ".join(
        f"{osp.basename(p)} {osp.getsize(p) / 1e6:.1f} MB" for p in files.values()))

    # --- accuracy: stream the frames; each ORT model carries its own previous BEV
    model.reset_test_state()
    caches = {key: TemporalBEVCache() for key in runners}
    errors = {key: {"visual_tokens": [], "bev": []} for key in runners}
    timing_inputs, history = [], []
    for imgs, samples in frames:
        scenes = [s.scene_token for s in samples]
        prevs = [s.prev_token for s in samples]
        tokens = [s.token for s in samples]
        motions = [s.ego_motion[-1] for s in samples]
        ego2img = torch.stack([s.ego2img[-1] for s in samples])
        prev_ref, motion_ref = (model.temporal_cache.lookup(scenes, prevs, motions)  # what PyTorch will use
                                if vision.temporal else (None, None))
        timing_inputs.append(vision.make_inputs(imgs[:, -1], ego2img, prev_ref, motion_ref))
        history.append(bool(prev_ref is not None and bool(motion_ref.valid.all())))
        with torch.no_grad():
            ref_vis, ref_bev = model.visual_tokens(imgs, samples, streaming=True)
        for key, runner in runners.items():
            prev, motion = caches[key].lookup(scenes, prevs, motions)
            vis, bev = runner(vision.make_inputs(imgs[:, -1], ego2img, prev, motion))
            caches[key].update(scenes, tokens, bev)
            errors[key]["visual_tokens"].append(output_errors(ref_vis, vis))
            errors[key]["bev"].append(output_errors(ref_bev, bev))

    # --- timing: interleaved, rotating order
    def torch_call(inputs):
        with torch.no_grad():
            vision(**inputs)

    calls = {"torch_fp32": torch_call, **{key: runner for key, runner in runners.items()}}
    times = {key: [] for key in calls}
    for fn in calls.values():  # warm-up
        fn(timing_inputs[0])
    order = list(calls)
    for rnd in range(args.repeats):
        for inputs in timing_inputs:
            for key in order:
                t0 = time.perf_counter()
                calls[key](inputs)
                times[key].append(time.perf_counter() - t0)
        order = order[1:] + order[:1]
    median_ms = {key: 1000 * _median(v) for key, v in times.items()}

    # --- report
    def worst(records):
        i = max(range(len(records)), key=lambda j: records[j]["rel"])
        return dict(records[i], frame=i, max_abs_all_frames=max(r["max_abs"] for r in records))

    summary = {}
    for key in calls:
        row = {"median_ms": median_ms[key], "speedup_vs_torch": median_ms["torch_fp32"] / median_ms[key],
               "file": files.get(key), "file_mb": osp.getsize(files[key]) / 1e6 if key in files else None}
        if key in errors:
            row["errors"] = {out: worst(recs) for out, recs in errors[key].items()}
        summary[key] = row
    fp32_rel = max(summary["ort_fp32"]["errors"][o]["rel"] for o in ("visual_tokens", "bev"))
    report = {
        "config": args.config, "checkpoint": args.checkpoint, "frames": len(frames), "repeats": args.repeats,
        "frame_tokens": [s.token for _, samples in frames for s in samples],
        "frame_has_previous_bev": history,
        "threads": threads, "opset": args.opset, "static_shapes": args.static_shapes, "export_s": export_s,
        "graph": info,
        "tolerance_fp32_rel": args.tol, "fp32_within_tolerance": fp32_rel <= args.tol,
        "results": summary,
        "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
                    "torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__,
                    "onnx": __import__("onnx").__version__},
        "errors_are": "max over frames of the max absolute error vs PyTorch (BEVVLM.visual_tokens, streamed); "
                      "rel = that error / max |PyTorch value| of the frame",
    }
    atomic_write_json(report, osp.join(args.out, "onnx_report.json"), indent=2)
    print(f"\n{'runner':<20}{'vis max abs':>13}{'vis rel':>11}{'bev max abs':>13}{'bev rel':>11}"
          f"{'median ms':>11}{'vs torch':>10}{'MB':>8}")
    for key, row in summary.items():
        err = row.get("errors")
        cells = (f"{err['visual_tokens']['max_abs_all_frames']:>13.3e}{err['visual_tokens']['rel']:>11.2e}"
                 f"{err['bev']['max_abs_all_frames']:>13.3e}{err['bev']['rel']:>11.2e}") if err else \
            f"{'(reference)':>13}{'':>11}{'':>13}{'':>11}"
        mb = f"{row['file_mb']:>8.1f}" if row["file_mb"] else f"{'':>8}"
        print(f"{key:<20}{cells}{row['median_ms']:>11.1f}{row['speedup_vs_torch']:>9.2f}x{mb}")
    print(f"\nframes with a previous BEV (temporal input used): {sum(history)} of {len(history)}")
    print(f"scale (max |PyTorch value|): visual tokens {summary['ort_fp32']['errors']['visual_tokens']['scale']:.3g}, "
          f"BEV {summary['ort_fp32']['errors']['bev']['scale']:.3g}; wrote {osp.join(args.out, 'onnx_report.json')}")
    if fp32_rel > args.tol:
        print(f"export_onnx: FAIL: the fp32 ONNX model deviates from PyTorch by {fp32_rel:.2e} of the output scale "
              f"(tolerance {args.tol:.0e})", file=sys.stderr)
        return 1
    print(f"export_onnx: fp32 within tolerance ({fp32_rel:.2e} <= {args.tol:.0e} of the output scale)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

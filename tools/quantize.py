"""Post-training quantisation of a trained BEV-VLM's LLM into one safetensors file.

  python tools/quantize.py CONFIG CKPT --variant int4_grid [--out FILE]

The quantisation settings are the ``quant`` switch of a variant of ``--bench`` (default
``configs/benchmarks/default.py``), checked (``bevlm.inference.quantization.quant_settings``)
before the model is loaded and stored in the file; calibration frames (GPTQ) come from the
training split. The file holds the packed int4 codes, fp16 scales / offsets and every other LLM
tensor; test with it:

  python tools/test.py CONFIG CKPT --quantized FILE
"""
import argparse
import json
import os
import os.path as osp


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("checkpoint")
    p.add_argument("--variant", default="int4_grid", help="variant whose `quant` switch to apply")
    p.add_argument("--bench", default="configs/benchmarks/default.py", help="file defining `variants`")
    p.add_argument("--out", help="output file (default: next to CKPT, <ckpt>.<variant>.safetensors)")
    p.add_argument("--calib-frames", type=int, default=4)
    args = p.parse_args()
    import bevlm.engine  # noqa: F401
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from bevlm.engine.benchmark import load_model
    from bevlm.inference.ptq import quantize_bevvlm, save_quantized_llm
    from bevlm.inference.quantization import quant_settings
    from bevlm.inference.variants import variant_inputs

    init_default_scope("bevlm")
    variants = Config.fromfile(args.bench).variants.to_dict()
    if args.variant not in variants:
        raise SystemExit(f"{args.bench}: no variant {args.variant!r}; choose one of {sorted(variants)}")
    spec = variants[args.variant].get("quant")
    if not spec:
        raise SystemExit(f"{args.bench}: variant {args.variant!r} has no `quant` switch")
    try:
        settings = quant_settings(spec)
    except ValueError as exc:
        raise SystemExit(f"{args.bench}: variant {args.variant!r}: {exc}") from exc
    if settings.method == "int8_dynamic":
        raise SystemExit(f"{args.bench}: variant {args.variant!r} has no int4 `quant` switch "
                         "(int8 dynamic layers are rebuilt in well under a second: re-apply them instead)")
    cfg = Config.fromfile(args.config)
    model = load_model(cfg, args.checkpoint)
    calib, _ = variant_inputs(model, cfg, [dict(quant=settings.to_dict())], args.calib_frames)
    report = quantize_bevvlm(model, settings, calib=calib)
    print(report.table())
    out = args.out or f"{osp.splitext(args.checkpoint)[0]}.{args.variant}.safetensors"
    save_quantized_llm(model, out, settings)
    size = os.path.getsize(out)
    summary = dict(variant=args.variant, quant=settings.to_dict(), file=out, file_bytes=size,
                   report=report.as_dict())
    with open(out + ".json.tmp", "w") as f:
        json.dump(summary, f, indent=2)
    os.replace(out + ".json.tmp", out + ".json")
    print(f"wrote {out} ({size / 1e6:.1f} MB) and {out}.json")


if __name__ == "__main__":
    main()

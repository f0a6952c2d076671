"""Teacher-forced fidelity of quantisation variants to the float model (see bevlm.inference.fidelity).

  python tools/quant_fidelity.py CONFIG CKPT --variants int4_rtn int4_gptq [--stride 8]

For every answer token of the test split's whole QA graph (every ``--stride``-th frame): top-1
agreement and KL of the variant's next-token distribution with the float model's, and its
accuracy on the reference token. Writes ``fidelity.json`` / ``fidelity.md`` under ``--out-dir``.
"""
import argparse
import json
import os
import os.path as osp

from mmengine.config import DictAction


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("checkpoint")
    p.add_argument("--bench", default="configs/benchmarks/default.py", help="file defining `variants`")
    p.add_argument("--variants", nargs="+", required=True)
    p.add_argument("--stride", type=int, default=8, help="use every k-th test frame")
    p.add_argument("--out-dir", default="work_dirs/quant_fidelity")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config keys (data paths, ...)")
    args = p.parse_args()
    import bevlm.engine  # noqa: F401
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from bevlm.engine.benchmark import load_model
    from bevlm.inference.fidelity import markdown_table, run_fidelity
    from bevlm.inference.quantization import quant_settings

    init_default_scope("bevlm")
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    variants = Config.fromfile(args.bench).variants.to_dict()
    missing = [v for v in args.variants if v not in variants]
    if missing:
        raise SystemExit(f"{args.bench}: no variants {missing}; available: {list(variants)}")
    for name in args.variants:  # every `quant` switch checked before the model is loaded
        if variants[name].get("quant"):
            try:
                variants[name]["quant"] = quant_settings(variants[name]["quant"]).to_dict()
            except ValueError as exc:
                raise SystemExit(f"{args.bench}: variant {name!r}: {exc}") from exc
    results = run_fidelity(cfg, load_model(cfg, args.checkpoint), {k: variants[k] for k in args.variants},
                           frame_stride=args.stride)
    os.makedirs(args.out_dir, exist_ok=True)
    for name, text in (("fidelity.json", json.dumps(results, indent=2)), ("fidelity.md", markdown_table(results))):
        with open(osp.join(args.out_dir, name + ".tmp"), "w") as f:
            f.write(text + "\n")
        os.replace(osp.join(args.out_dir, name + ".tmp"), osp.join(args.out_dir, name))
    print(markdown_table(results))


if __name__ == "__main__":
    main()
